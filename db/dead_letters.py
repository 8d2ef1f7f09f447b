"""Finding what a replay brings back (dead letters, purged events, done stages) by id or by filter, and giving it a
fresh try budget. jobs/replay.py queues what this resets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from db.models import Email, WebhookEvent
from db.states import EventStatus, PipelineState, Stage


@dataclass(frozen=True, kw_only=True)
class ReplayFilter:
    stage: str | None = None  # process, classify or act
    grant_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    error_contains: str | None = None
    event_ids: tuple[int, ...] = ()
    email_ids: tuple[int, ...] = ()
    # Also run stages that succeeded (e.g. classify again after changing the rules); emails only.
    force: bool = False
    # Events an operator purged from the queue, instead of dead ones. Named by id, either kind is brought back.
    purged: bool = False

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError(f"since ({self.since.isoformat()}) must be before until ({self.until.isoformat()})")


@dataclass(frozen=True)
class ReplayPlan:
    event_ids: list[int]
    emails: list[tuple[int, str]]  # (email id, stage to run)


def _event_query(f: ReplayFilter) -> Select[int]:
    if f.event_ids:
        statuses: tuple[str, ...] = (EventStatus.DEAD, EventStatus.PURGED)
    else:
        statuses = (EventStatus.PURGED,) if f.purged else (EventStatus.DEAD,)
    conditions: list[ColumnElement[bool]] = [WebhookEvent.status.in_(statuses)]
    if f.event_ids:
        conditions.append(WebhookEvent.id.in_(f.event_ids))
    conditions += _common(
        f, grant_id=WebhookEvent.grant_id, changed_at=WebhookEvent.updated_at, error=WebhookEvent.last_error
    )
    return select(WebhookEvent.id).where(*conditions).order_by(WebhookEvent.id)


def _email_query(f: ReplayFilter) -> Select[int, str]:
    if f.force:
        conditions: list[ColumnElement[bool]] = [
            Email.pipeline_state.in_((PipelineState.CLASSIFY, PipelineState.ACT, PipelineState.DONE))
        ]
    else:
        conditions = [Email.dead_at.is_not(None)]
    if f.email_ids:
        conditions.append(Email.id.in_(f.email_ids))
    if f.stage in (Stage.CLASSIFY, Stage.ACT) and not f.force:
        conditions.append(Email.pipeline_state == f.stage)
    conditions += _common(f, grant_id=Email.grant_id, changed_at=Email.pipeline_updated_at, error=Email.last_error)
    return select(Email.id, Email.pipeline_state).where(*conditions).order_by(Email.id)


def _common(
    f: ReplayFilter,
    *,
    grant_id: InstrumentedAttribute[str | None] | InstrumentedAttribute[str],
    changed_at: InstrumentedAttribute[datetime],
    error: InstrumentedAttribute[str | None],
) -> list[ColumnElement[bool]]:
    """The filters events and emails share (grant, time window, error text), on each table's own columns."""
    conditions: list[ColumnElement[bool]] = []
    if f.grant_id:
        conditions.append(grant_id == f.grant_id)
    if f.since:
        conditions.append(changed_at >= f.since)
    if f.until:
        conditions.append(changed_at < f.until)
    if f.error_contains:
        conditions.append(error.icontains(f.error_contains, autoescape=True))
    return conditions


async def plan(session: AsyncSession, f: ReplayFilter) -> ReplayPlan:
    event_ids: list[int] = []
    emails: list[tuple[int, str]] = []
    if f.stage in (None, "process") and not f.email_ids and not f.force:
        event_ids = list((await session.execute(_event_query(f))).scalars())
    if f.stage != "process" and not f.event_ids and not f.purged:
        emails = [(row[0], row[1]) for row in await session.execute(_email_query(f))]
        if f.force:
            stage = f.stage if f.stage in (Stage.CLASSIFY, Stage.ACT) else Stage.CLASSIFY
            emails = [(email_id, stage) for email_id, _ in emails]
    return ReplayPlan(event_ids=event_ids, emails=emails)


async def reset(session: AsyncSession, found: ReplayPlan) -> None:
    """Back to work with a fresh try budget: events to `queued`, emails to the stage they will run."""
    if found.event_ids:
        await session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id.in_(found.event_ids))
            .values(status=EventStatus.QUEUED, attempts=0, updated_at=func.now())
        )
    for email_id, stage in found.emails:
        await session.execute(
            update(Email)
            .where(Email.id == email_id)
            .values(
                pipeline_state=stage,
                dead_at=None,
                parked_at=None,
                stage_attempts=0,
                pipeline_updated_at=func.now(),
            )
        )
