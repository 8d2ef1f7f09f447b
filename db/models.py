"""Tables: webhook events as received, emails as last known, and per-grant state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Timestamp = DateTime(timezone=True)

EVENT_STATUSES = ("received", "queued", "processing", "processed", "ignored", "failed")
GRANT_STATUSES = ("active", "expired", "deleted")


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
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    processed_at: Mapped[datetime | None] = mapped_column(Timestamp)

    __table_args__ = (
        CheckConstraint(f"status IN {EVENT_STATUSES!r}", name="status"),
        Index("ix_webhook_events_status_updated_at", "status", "updated_at"),
        Index("ix_webhook_events_grant_id_object_id", "grant_id", "object_id"),
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
    deleted_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (UniqueConstraint("grant_id", "message_id"),)


class Grant(Base):
    """Per-grant state: whether we may call Nylas for it, and (later) its sync cursor."""

    __tablename__ = "grants"

    grant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(Text, server_default="active")
    email: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str | None] = mapped_column(Text)
    state_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (CheckConstraint(f"status IN {GRANT_STATUSES!r}", name="status"),)


__all__ = ["EVENT_STATUSES", "GRANT_STATUSES", "Base", "Email", "Grant", "WebhookEvent"]
