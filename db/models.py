"""Tables: webhook events as received, emails as last known, and per-grant state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db.states import (
    ActionStatus,
    DestinationStatus,
    EventStatus,
    GrantStatus,
    PipelineState,
    Stage,
    StageRunStatus,
    values,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Timestamp = DateTime(timezone=True)

EVENT_STATUSES = values(EventStatus)
GRANT_STATUSES = values(GrantStatus)
PIPELINE_STATES = values(PipelineState)
STAGES = values(Stage)
STAGE_RUN_STATUSES = values(StageRunStatus)
ACTION_STATUSES = values(ActionStatus)
DESTINATION_STATUSES = values(DestinationStatus)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class WebhookEvent(Base):
    """One Nylas notification, keyed on its envelope ``id`` (constant across Nylas's delivery attempts)."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    notification_id: Mapped[str] = mapped_column(Text, unique=True)
    type: Mapped[str] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)
    grant_id: Mapped[str | None] = mapped_column(Text)
    object_id: Mapped[str | None] = mapped_column(Text)
    # The notification's own `time`: the order of states, since Nylas does not deliver in order.
    notified_at: Mapped[datetime] = mapped_column(Timestamp)
    delivery_attempt: Mapped[int | None] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(Text, server_default="received")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    # The W3C traceparent of the request that stored it, when tracing is on (core/tracing.py).
    trace_context: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    processed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Content removed (an erasure request, grant.deleted, message.deleted or retention): ids and status remain.
    erased_at: Mapped[datetime | None] = mapped_column(Timestamp)

    __table_args__ = (
        CheckConstraint(f"status IN {EVENT_STATUSES!r}", name="status"),
        Index("ix_webhook_events_status_updated_at", "status", "updated_at"),
        Index("ix_webhook_events_grant_id_object_id", "grant_id", "object_id"),
        # Retention looks for old rows by time (BRIN: next to no cost on the hot path's writes).
        Index("ix_webhook_events_received_at_brin", "received_at", postgresql_using="brin"),
    )


class Email(Base):
    """The latest known state of one message of one grant."""

    __tablename__ = "emails"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    grant_id: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(Text)
    thread_id: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    from_: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    from_email: Mapped[str | None] = mapped_column(Text)
    to: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    cc: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    bcc: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    reply_to: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    date: Mapped[datetime | None] = mapped_column(Timestamp)
    snippet: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    folders: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    unread: Mapped[bool | None] = mapped_column(Boolean)
    starred: Mapped[bool | None] = mapped_column(Boolean)
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Time of the notification this state came from; an older one never overwrites a newer one.
    state_at: Mapped[datetime] = mapped_column(Timestamp)
    # When the first notification of this message reached us (webhook-to-acted latency starts here).
    first_received_at: Mapped[datetime | None] = mapped_column(Timestamp)
    deleted_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Nylas answered 404 for it: deleted or moved out of reach.
    missing_at: Mapped[datetime | None] = mapped_column(Timestamp)
    classification: Mapped[str | None] = mapped_column(Text)
    classified_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # The next stage to run (`done` when none); with dead_at or parked_at set, it waits for a replay or its grant.
    pipeline_state: Mapped[str] = mapped_column(Text, server_default="classify")
    pipeline_updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    stage_attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    dead_at: Mapped[datetime | None] = mapped_column(Timestamp)
    parked_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Content removed (an erasure request, grant.deleted, message.deleted or retention): ids and states remain.
    erased_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        UniqueConstraint("grant_id", "message_id"),
        CheckConstraint(f"pipeline_state IN {PIPELINE_STATES!r}", name="pipeline_state"),
        Index("ix_emails_pipeline_state_pipeline_updated_at", "pipeline_state", "pipeline_updated_at"),
        # Dead and parked emails are few; these keep counting and listing them cheap.
        Index("ix_emails_dead_at", "dead_at", postgresql_where=text("dead_at IS NOT NULL")),
        Index("ix_emails_parked_at", "parked_at", postgresql_where=text("parked_at IS NOT NULL")),
        Index("ix_emails_created_at_brin", "created_at", postgresql_using="brin"),
    )


class Grant(Base):
    """Per-grant state: whether we may call Nylas for it, and (later) its sync cursor."""

    __tablename__ = "grants"

    grant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(Text, server_default="active")
    email: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str | None] = mapped_column(Text)
    state_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Messages received up to this time are synced; the next sync lists from here (minus an overlap).
    sync_cursor: Mapped[datetime | None] = mapped_column(Timestamp)
    last_synced_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Set when Nylas refused the grant's credentials (401/403) or sent grant.expired; cleared by grant.updated.
    paused_at: Mapped[datetime | None] = mapped_column(Timestamp)
    paused_reason: Mapped[str | None] = mapped_column(Text)
    # An operator's Nylas call rate for this grant (calls a second); NULL: MAILROOM_NYLAS_RATE_PER_GRANT.
    nylas_rate: Mapped[int | None] = mapped_column(Integer)
    deleted_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (CheckConstraint(f"status IN {GRANT_STATUSES!r}", name="status"),)


class Pause(Base):
    """An operator's pause, honoured by every worker within seconds: everything, one grant, or one stage."""

    __tablename__ = "pauses"

    scope: Mapped[str] = mapped_column(Text, primary_key=True)  # all, grant, stage
    target: Mapped[str] = mapped_column(Text, primary_key=True, server_default="")  # the grant or stage; "" for all
    paused_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    paused_by: Mapped[str] = mapped_column(Text)

    __table_args__ = (CheckConstraint("scope IN ('all', 'grant', 'stage')", name="scope"),)


class AuditEntry(Base):
    """An operator's action (replay, purge, erase) or a refused sign-in: when, who, what filter, how many rows."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    # `cli:user@host`, `token@address` (the admin API's bearer token) or `dashboard@address` (a dashboard session).
    who: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    filter: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    rows: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_audit_log_at", "at"),)


class WebhookDestination(Base):
    """The application's webhook destinations at Nylas, as the health check last saw them (jobs/webhook_health.py)."""

    __tablename__ = "webhook_destinations"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    # When Nylas last changed the status, and when we first saw it other than active (cleared when active again).
    status_updated_at: Mapped[datetime | None] = mapped_column(Timestamp)
    unhealthy_since: Mapped[datetime | None] = mapped_column(Timestamp)
    # Up to when the grants were backfilled for this outage (syncs from here on cover what Nylas skipped since).
    backfilled_to: Mapped[datetime | None] = mapped_column(Timestamp)
    checked_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (CheckConstraint(f"status IN {DESTINATION_STATUSES!r}", name="status"),)


class StageRun(Base):
    """One try of one stage for one event or email: together, an email's timeline."""

    __tablename__ = "stage_runs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    stage: Mapped[str] = mapped_column(Text)
    event_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("webhook_events.id", ondelete="CASCADE"))
    email_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("emails.id", ondelete="CASCADE"))
    grant_id: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(Text)
    job_id: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    started_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)

    __table_args__ = (
        CheckConstraint(f"stage IN {STAGES!r}", name="stage"),
        CheckConstraint(f"status IN {STAGE_RUN_STATUSES!r}", name="status"),
        Index("ix_stage_runs_email_id", "email_id"),
        Index("ix_stage_runs_event_id", "event_id"),
        Index("ix_stage_runs_status_stage", "status", "stage"),
    )


class Action(Base):
    """A side effect at Nylas, planned once per idempotency key and carried out at most once."""

    __tablename__ = "actions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    email_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("emails.id", ondelete="CASCADE"))
    grant_id: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    idempotency_key: Mapped[str] = mapped_column(Text, unique=True)
    status: Mapped[str] = mapped_column(Text, server_default="planned")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    done_at: Mapped[datetime | None] = mapped_column(Timestamp)

    __table_args__ = (
        CheckConstraint(f"status IN {ACTION_STATUSES!r}", name="status"),
        Index("ix_actions_email_id", "email_id"),
    )


class HistorySample(Base):
    """Queue depth and the cumulative stage counters at one moment, kept for the dashboard's charts.

    `at` is the start of the sampling interval, so every API sampling the same interval writes the one row."""

    __tablename__ = "history"

    at: Mapped[datetime] = mapped_column(Timestamp, primary_key=True)
    ready: Mapped[int] = mapped_column(Integer)
    deferred: Mapped[int] = mapped_column(Integer)
    running: Mapped[int] = mapped_column(Integer)
    oldest_ready_age_s: Mapped[float] = mapped_column(Float)
    dead: Mapped[int] = mapped_column(Integer)
    # Counters since Redis's metrics began (they restart at 0 when Redis loses them): rates are their differences.
    webhooks: Mapped[float] = mapped_column(Float)
    processed: Mapped[float] = mapped_column(Float)
    classified: Mapped[float] = mapped_column(Float)
    acted: Mapped[float] = mapped_column(Float)
    failed: Mapped[float] = mapped_column(Float)


class CronRun(Base):
    """One tick of one cron job; the unique key makes a tick run once however many workers see it."""

    __tablename__ = "cron_runs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    tick_at: Mapped[datetime] = mapped_column(Timestamp)
    worker: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("name", "tick_at"),)


__all__ = [
    "ACTION_STATUSES",
    "DESTINATION_STATUSES",
    "EVENT_STATUSES",
    "GRANT_STATUSES",
    "PIPELINE_STATES",
    "STAGES",
    "STAGE_RUN_STATUSES",
    "Action",
    "AuditEntry",
    "Base",
    "CronRun",
    "Email",
    "Grant",
    "HistorySample",
    "Pause",
    "StageRun",
    "WebhookDestination",
    "WebhookEvent",
]
