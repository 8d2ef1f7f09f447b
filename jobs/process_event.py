"""Job `process_event(event_id)`: one stored notification becomes an email or a grant state. Idempotent.

Then the email's chain goes on: classify, then act (jobs/chain.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from core import tracing
from db import emails, erasure, grants, stage_runs, webhook_events
from db.models import WebhookEvent
from db.states import Stage, StageRunStatus
from db.uow import read_session, unit_of_work
from db.webhook_events import ClaimedEvent
from jobs import failures
from jobs.chain import carry_on
from jobs.context import JobContext
from jobs.enqueue import (
    STAGE_JOBS,
    enqueue_sync_grant,
    requeue_event,
    requeue_stage,
)
from jobs.errors import Throttled, TransientError
from jobs.failures import Failure
from jobs.grant_calls import defer_for, note_rate_limit
from jobs.message_columns import email_columns, is_complete
from jobs.triggers import GRANT_STATUS_BY_TYPE, Kind, Trigger, parse_trigger

log = structlog.get_logger(__name__)


async def process_event(ctx: dict[str, Any], event_id: int) -> str:
    """Returns what happened: processed, skipped (already done), parked, missing, dead; or raises arq.Retry."""
    jc = JobContext.from_ctx(ctx)
    async with read_session(jc.sessionmaker) as session:
        event = await webhook_events.get(session, event_id)
    if event is None or event.status not in webhook_events.RUNNABLE:
        return "skipped"
    paused = await jc.pauses.current()
    if paused.grant(event.grant_id) or paused.stage("process"):
        return "paused"  # it waits, no try spent; resuming queues it again (jobs/pausing.py)
    # In the trace of the request that stored it, however late (a retry, a replay, a sweep) it runs.
    waited = (datetime.now(UTC) - event.received_at).total_seconds()
    attributes = {
        "mailroom.event_id": event_id,
        "mailroom.queue_wait_s": waited,
        "mailroom.job_id": str(ctx.get("job_id")),
    }
    with tracing.span("mailroom.process_event", parent=event.trace_context, attributes=attributes):
        return await _process(ctx, jc, event)


async def _process(ctx: dict[str, Any], jc: JobContext, event: WebhookEvent) -> str:
    event_id = event.id
    bound = log.bind(event_id=event_id, job_id=ctx.get("job_id"))
    trigger = parse_trigger(event.type)
    if trigger is None:
        return "skipped"
    bound = bound.bind(type=event.type, grant_id=event.grant_id)
    obj: dict[str, Any] = event.payload["data"]["object"]
    needs_fetch = trigger.kind is Kind.MESSAGE and (trigger.truncated or not is_complete(obj))

    if needs_fetch:
        assert event.grant_id is not None
        # Checked before the claim, so waiting for a grant or for throttle room never spends a try.
        async with read_session(jc.sessionmaker) as session:
            allowed = await grants.may_call_nylas(session, event.grant_id)
        if not allowed:
            async with unit_of_work(jc.sessionmaker) as session:
                await webhook_events.park(session, event_id, reason="grant paused")
            bound.info("event.parked")
            return "parked"
        wait = await jc.throttle.acquire(event.grant_id, rate=(await jc.pauses.current()).rates.get(event.grant_id))
        if wait:
            raise defer_for(Throttled(wait))

    async with unit_of_work(jc.sessionmaker) as session:
        # A `processing` event younger than a run's bound is a live run's (a batch worker's, say): not ours.
        claimed = await webhook_events.start_processing(session, event_id, stale_after_s=jc.settings.job_timeout)
        if claimed is None:
            return "skipped"
        run_id = await stage_runs.start(
            session,
            stage=Stage.PROCESS,
            attempt=claimed.attempts,
            event_id=event_id,
            grant_id=event.grant_id,
            job_id=ctx.get("job_id"),
        )
    started = time.monotonic()
    next_stage: list[tuple[str, int]] = []
    try:
        async with asyncio.timeout(jc.settings.job_timeout * 0.9):
            outcome = await _apply(jc, claimed, trigger, run_id, fetched=needs_fetch, then=next_stage)
    except Exception as exc:
        return await record_failure(jc, claimed, run_id, exc, bound)
    jc.metrics.inc("mailroom_jobs", stage="process", outcome="succeeded")
    jc.metrics.observe("mailroom_stage_duration_seconds", time.monotonic() - started, stage="process")
    if trigger.kind is Kind.MESSAGE:
        stored_after = (datetime.now(UTC) - claimed.received_at).total_seconds()
        jc.metrics.observe("mailroom_webhook_to_stored_seconds", stored_after)
    bound.info("event.processed", outcome=outcome)
    for stage, email_id in next_stage:
        await carry_on(ctx, stage, email_id, started=started)
    return outcome


async def _apply(
    jc: JobContext, event: WebhookEvent, trigger: Trigger, run_id: int, *, fetched: bool, then: list[tuple[str, int]]
) -> str:
    """Carry out the event; the email's next stage, if it has one, is added to `then`."""
    obj: dict[str, Any] = event.payload["data"]["object"]
    if trigger.kind is Kind.GRANT:
        return await _apply_grant(jc, event, trigger, run_id)
    assert event.grant_id is not None and event.object_id is not None
    grant_id, message_id = event.grant_id, event.object_id
    if trigger.kind is Kind.MESSAGE_DELETED:
        async with unit_of_work(jc.sessionmaker) as session:
            # False when a newer state of the message is already stored: then the delete changed nothing.
            applied = await emails.mark_deleted(
                session, grant_id=grant_id, message_id=message_id, state_at=event.notified_at
            )
            # Deleted at the mailbox: its content goes from here too, wherever it is stored.
            erased = await erasure.erase_message(session, grant_id, message_id) if applied else erasure.Erased()
            await webhook_events.mark_processed(session, event.id)
            await stage_runs.finish(
                session,
                run_id,
                status=StageRunStatus.SUCCEEDED,
                detail={"deleted": applied, "erased_emails": erased.emails},
            )
        return "processed"

    if fetched:
        # The throttle already granted this call (before the claim).
        try:
            message = await jc.nylas.find_message(grant_id, message_id)
        except TransientError as exc:
            await note_rate_limit(jc, grant_id, exc)
            raise
    else:
        message = obj
    columns = email_columns(message)
    async with unit_of_work(jc.sessionmaker) as session:
        if await grants.ensure_status(session, grant_id) == "deleted":
            # The user left (grant.deleted erased their mail): a late notification must not bring content back.
            await webhook_events.mark_processed(session, event.id)
            await erasure.erase_message(session, grant_id, message_id)
            await stage_runs.finish(session, run_id, status=StageRunStatus.SKIPPED, detail={"grant_deleted": True})
            return "processed"
        stored = await emails.upsert(
            session,
            grant_id=grant_id,
            message_id=message_id,
            state_at=event.notified_at,
            columns=columns,
            received_at=event.received_at,
        )
        await webhook_events.mark_processed(session, event.id)
        await stage_runs.finish(
            session,
            run_id,
            status=StageRunStatus.SUCCEEDED,
            email_id=stored.email_id,
            detail={"fetched": fetched, "inserted": stored.inserted, "written": stored.written},
        )
    if stored.pipeline_state in ("classify", "act") and not stored.waiting:
        then.append((stored.pipeline_state, stored.email_id))
    return "processed"


async def _apply_grant(jc: JobContext, event: WebhookEvent, trigger: Trigger, run_id: int) -> str:
    assert event.grant_id is not None
    obj: dict[str, Any] = event.payload["data"]["object"]
    status = GRANT_STATUS_BY_TYPE[trigger.base]
    resumed_from = None
    unparked_events: list[int] = []
    unparked_emails: list[tuple[int, str]] = []
    erased_counts: dict[str, int] | None = None
    async with unit_of_work(jc.sessionmaker) as session:
        applied = await grants.apply_state(
            session,
            grant_id=event.grant_id,
            status=status,
            state_at=event.notified_at,
            email=obj.get("email") if isinstance(obj.get("email"), str) else None,
            provider=obj.get("provider") if isinstance(obj.get("provider"), str) else None,
        )
        if applied and status == "expired":
            await grants.pause(session, event.grant_id, reason="grant.expired")
        elif applied and status == "active":
            resumed_from = await grants.resume(session, event.grant_id)
            unparked_events = await webhook_events.unpark_grant(session, event.grant_id)
            unparked_emails = await emails.unpark_grant(session, event.grant_id)
        elif applied and status == "deleted":
            await grants.mark_deleted(session, event.grant_id)
            await webhook_events.stop_grant(session, event.grant_id)
            await emails.stop_grant(session, event.grant_id)
            # The user left: every piece of the grant's content goes, in the same transaction.
            erased = await erasure.erase_grant(session, event.grant_id)
            erased_counts = {"emails": erased.emails, "events": erased.events, "actions": erased.actions}
        await webhook_events.mark_processed(session, event.id)
        await stage_runs.finish(
            session,
            run_id,
            status=StageRunStatus.SUCCEEDED,
            detail={
                "applied": applied,
                "status": status,
                "unparked": len(unparked_events) + len(unparked_emails),
                **({"erased": erased_counts} if erased_counts is not None else {}),
            },
        )
    # Their earlier (parked) runs left results under the same job ids: requeue, which clears them.
    for parked_event in unparked_events:
        await requeue_event(jc.queue, parked_event)
    for email_id, stage in unparked_emails:
        if stage in STAGE_JOBS:
            await requeue_stage(jc.queue, stage, email_id)
    if resumed_from is not None:
        # Backfill what the pause may have missed: Nylas re-sends webhooks only for outages under 72 h.
        since = resumed_from - timedelta(seconds=jc.settings.sync_overlap_seconds)
        await enqueue_sync_grant(jc.queue, event.grant_id, since=since.timestamp(), tick=f"resume-{event.id}")
    return "processed"


@dataclass(frozen=True, slots=True)
class EventTry:
    """A failed try of an event's process stage (jobs/failures.py records it)."""

    event: WebhookEvent | ClaimedEvent
    run_id: int
    log: Any
    stage: str = "process"

    @property
    def attempt(self) -> int:
        return self.event.attempts

    @property
    def grant_id(self) -> str | None:
        return self.event.grant_id

    async def gone(self, session: AsyncSession, failure: Failure) -> None:
        event = self.event
        assert event.grant_id is not None and event.object_id is not None
        email_id = await emails.mark_missing(
            session, grant_id=event.grant_id, message_id=event.object_id, state_at=event.notified_at
        )
        await webhook_events.mark_processed(session, event.id)
        await stage_runs.finish(
            session,
            self.run_id,
            status=StageRunStatus.SKIPPED,
            email_id=email_id,
            error=failure.error,
            detail={"missing": True},
        )

    async def park(self, session: AsyncSession, failure: Failure) -> None:
        await webhook_events.park(session, self.event.id, reason=failure.error)

    async def failed(self, session: AsyncSession, failure: Failure, *, dead: bool) -> None:
        await webhook_events.mark_attempt_failed(session, self.event.id, error=failure.error, final=dead)


async def record_failure(
    jc: JobContext, event: WebhookEvent | ClaimedEvent, run_id: int, exc: Exception, bound: Any
) -> str:
    """The policy's verdict on a failed try of the event; a retry raises arq.Retry with its delay."""
    return (await failures.record_failure(jc, EventTry(event, run_id, bound), exc)).value
