"""Job `process_event(event_id)`: turn one stored notification into an email or grant state. Idempotent."""

from __future__ import annotations

from typing import Any

import structlog
from arq import Retry

from db import emails, grants, webhook_events
from db.errors import DatabaseError, translate_errors
from db.models import WebhookEvent
from db.uow import unit_of_work
from jobs.backoff import retry_delay
from jobs.context import JobContext
from jobs.errors import PermanentError, TransientError
from jobs.messages import email_columns, is_complete
from jobs.triggers import GRANT_STATUS_BY_TYPE, Kind, parse_trigger

log = structlog.get_logger(__name__)


async def process_event(ctx: dict[str, Any], event_id: int) -> str:
    """Returns what happened: `processed`, `skipped` (already done), `retrying` never returns (arq.Retry), `failed`."""
    jc = JobContext.from_ctx(ctx)
    job_try: int = ctx.get("job_try", 1)
    bound = log.bind(event_id=event_id, job_id=ctx.get("job_id"), job_try=job_try)
    try:
        with translate_errors():
            async with unit_of_work(jc.sessionmaker) as session:
                event = await webhook_events.start_processing(session, event_id)
        if event is None:
            bound.info("event.skipped")
            return "skipped"
        bound = bound.bind(type=event.type, grant_id=event.grant_id)
        await _apply(jc, event)
    except (TransientError, DatabaseError) as exc:
        retry_after = exc.retry_after if isinstance(exc, TransientError) else None
        return await _failed(jc, event_id, exc, job_try, bound, retry_after=retry_after, permanent=False)
    except PermanentError as exc:
        return await _failed(jc, event_id, exc, job_try, bound, retry_after=None, permanent=True)
    bound.info("event.processed")
    return "processed"


async def _apply(jc: JobContext, event: WebhookEvent) -> None:
    trigger = parse_trigger(event.type)
    obj: dict[str, Any] = event.payload["data"]["object"]
    if trigger is None:
        raise PermanentError(f"type {event.type!r} is not processed")
    if trigger.kind is Kind.MESSAGE:
        assert event.grant_id is not None and event.object_id is not None
        message = obj if not trigger.truncated and is_complete(obj) else None
        if message is None:
            message = await jc.nylas.find_message(event.grant_id, event.object_id)
        columns = email_columns(message)
        with translate_errors():
            async with unit_of_work(jc.sessionmaker) as session:
                await grants.ensure(session, event.grant_id)
                await emails.upsert(
                    session,
                    grant_id=event.grant_id,
                    message_id=event.object_id,
                    state_at=event.notified_at,
                    columns=columns,
                )
                await webhook_events.mark_processed(session, event.id)
    elif trigger.kind is Kind.MESSAGE_DELETED:
        assert event.grant_id is not None and event.object_id is not None
        with translate_errors():
            async with unit_of_work(jc.sessionmaker) as session:
                await emails.mark_deleted(
                    session, grant_id=event.grant_id, message_id=event.object_id, state_at=event.notified_at
                )
                await webhook_events.mark_processed(session, event.id)
    else:
        assert event.grant_id is not None
        with translate_errors():
            async with unit_of_work(jc.sessionmaker) as session:
                await grants.apply_state(
                    session,
                    grant_id=event.grant_id,
                    status=GRANT_STATUS_BY_TYPE[trigger.base],
                    state_at=event.notified_at,
                    email=obj.get("email") if isinstance(obj.get("email"), str) else None,
                    provider=obj.get("provider") if isinstance(obj.get("provider"), str) else None,
                )
                await webhook_events.mark_processed(session, event.id)


async def _failed(
    jc: JobContext,
    event_id: int,
    exc: Exception,
    job_try: int,
    bound: Any,
    *,
    retry_after: float | None,
    permanent: bool,
) -> str:
    final = permanent or job_try >= jc.settings.job_max_tries
    error = f"{type(exc).__name__}: {exc}"
    try:
        with translate_errors():
            async with unit_of_work(jc.sessionmaker) as session:
                await webhook_events.mark_attempt_failed(session, event_id, error=error, final=final)
    except DatabaseError as db_exc:
        bound.warning("event.failure_not_recorded", error=str(db_exc))
    if final:
        bound.error("event.failed", error=error, permanent=permanent)
        return "failed"
    delay = retry_delay(
        job_try, base=jc.settings.retry_base_delay, cap=jc.settings.retry_max_delay, retry_after=retry_after
    )
    bound.warning("event.retrying", error=error, defer_s=round(delay, 3))
    raise Retry(defer=delay)
