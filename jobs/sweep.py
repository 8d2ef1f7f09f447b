"""The sweeper: work the database says is unfinished and Redis has no job for is queued again.

This is what makes a failed enqueue, a Redis restart or a Redis flush lose nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from db import emails, erasure, webhook_events
from db.uow import read_session, unit_of_work
from jobs.context import JobContext
from jobs.enqueue import (
    batched_event_ids,
    requeue_event,
    requeue_stage,
)

log = structlog.get_logger(__name__)


async def sweep(jc: JobContext) -> dict[str, Any]:
    cutoff = datetime.now(UTC) - timedelta(seconds=jc.settings.sweep_after_seconds)
    async with read_session(jc.sessionmaker) as session:
        # With the batch worker a `received` event is not lost anywhere: it waits in this table for a claim.
        statuses = ("queued", "processing") if jc.settings.batch_worker else webhook_events.RUNNABLE
        event_ids = await webhook_events.stuck(
            session, older_than=cutoff, limit=jc.settings.sweep_batch, statuses=statuses
        )
        waiting = await emails.stuck(session, older_than=cutoff, limit=jc.settings.sweep_batch)
    batched = await batched_event_ids(jc.queue) if event_ids else set()
    requeued_events = [
        event_id for event_id in event_ids if event_id not in batched and await requeue_event(jc.queue, event_id)
    ]
    requeued_emails = [email_id for email_id, stage in waiting if await requeue_stage(jc.queue, stage, email_id)]
    async with unit_of_work(jc.sessionmaker) as session:
        # Touched, so the next sweep gives the new job its time before looking again.
        if event_ids:
            await webhook_events.touch_swept(session, event_ids)
        if waiting:
            await emails.touch(session, [email_id for email_id, _ in waiting])
    result = {
        "events_stuck": len(event_ids),
        "events_requeued": len(requeued_events),
        "emails_stuck": len(waiting),
        "emails_requeued": len(requeued_emails),
    }

    if requeued_events or requeued_emails:
        log.warning("sweep.requeued", **result)
    return result


async def erase_expired(jc: JobContext, tick: str = "") -> dict[str, Any]:
    """Retention (hourly cron): content older than MAILROOM_RETENTION_DAYS goes, a batch per transaction, until
    none is left or most of the job's time is used."""
    if not jc.settings.retention_days:
        return {"retention": "off"}
    expired = datetime.now(UTC) - timedelta(days=jc.settings.retention_days)
    total = erasure.Erased()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(jc.settings.job_timeout * 0.8):
            while True:
                async with unit_of_work(jc.sessionmaker) as session:
                    erased = await erasure.erase_older_than(session, expired, limit=jc.settings.sweep_batch)
                total += erased
                if max(erased.emails, erased.events) < jc.settings.sweep_batch:
                    break
    if total.emails or total.events:
        log.info("retention.erased", emails=total.emails, events=total.events, actions=total.actions)
    return {"erased_emails": total.emails, "erased_events": total.events}
