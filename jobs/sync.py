"""Listing a grant's recent messages from Nylas: the cron sync, the backfill after a pause, `mailroom sync`.

It heals missed webhooks: whatever it stores that we did not have is counted as `new`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from arq import Retry

from db import emails, grants
from db.uow import read_session, unit_of_work
from jobs.context import JobContext
from jobs.enqueue import enqueue_stage, enqueue_sync_grant
from jobs.errors import Throttled, TransientError
from jobs.grant_calls import defer_for, throttled
from jobs.message_columns import email_columns

log = structlog.get_logger(__name__)


@dataclass
class SyncProgress:
    grant_id: str
    since: datetime
    started: datetime
    pages: int = 0
    listed: int = 0
    new: int = 0  # not stored before: a webhook we never got (or not yet)
    updated: int = 0
    next_page: str | None = None
    new_ids: list[int] = field(default_factory=list)


async def sync_pages(
    jc: JobContext,
    progress: SyncProgress,
    *,
    page_token: str | None,
    max_pages: int | None,
    on_page: Callable[[SyncProgress], Awaitable[None] | None] | None = None,
) -> SyncProgress:
    """List pages from `page_token` on, storing each; stops after `max_pages` with `next_page` set to resume."""
    token = page_token
    while True:
        messages, token = await throttled(
            jc,
            progress.grant_id,
            lambda t=token: jc.nylas.list_messages(  # type: ignore[misc]
                progress.grant_id,
                received_after=int(progress.since.timestamp()),
                page_token=t,
                limit=jc.settings.sync_page_size,
            ),
        )
        await _store_page(jc, progress, messages)
        progress.pages += 1
        progress.next_page = token
        if on_page is not None:
            maybe = on_page(progress)
            if maybe is not None:
                await maybe
        if token is None or (max_pages is not None and progress.pages >= max_pages):
            return progress


async def _store_page(jc: JobContext, progress: SyncProgress, messages: list[dict[str, Any]]) -> None:
    chained: list[tuple[str, int]] = []
    async with unit_of_work(jc.sessionmaker) as session:
        await grants.ensure(session, progress.grant_id)
        listed_ids = [m["id"] for m in messages if isinstance(m.get("id"), str) and m["id"]]
        # What we hold already: a message listed again unchanged is not counted as updated.
        before = await emails.raw_states(session, progress.grant_id, listed_ids) if listed_ids else {}
        for message in messages:
            message_id = message.get("id")
            if not isinstance(message_id, str) or not message_id:
                continue
            columns = email_columns({**message, "grant_id": progress.grant_id})
            # The listing is the state as of when it started; a later notification still wins.
            stored = await emails.upsert(
                session,
                grant_id=progress.grant_id,
                message_id=message_id,
                state_at=progress.started,
                columns=columns,
            )
            progress.listed += 1
            if stored.inserted:
                progress.new += 1
                progress.new_ids.append(stored.email_id)
            elif stored.written and before.get(message_id) != columns["raw"]:
                progress.updated += 1
            if stored.pipeline_state in ("classify", "act") and not stored.waiting:
                chained.append((stored.pipeline_state, stored.email_id))
    for stage, email_id in chained:
        await enqueue_stage(jc.queue, stage, email_id)


async def default_since(jc: JobContext, grant_id: str) -> datetime:
    async with read_session(jc.sessionmaker) as session:
        grant = await grants.get(session, grant_id)
    overlap = timedelta(seconds=jc.settings.sync_overlap_seconds)
    if grant is not None and grant.sync_cursor is not None:
        return grant.sync_cursor - overlap
    return datetime.now(UTC) - timedelta(hours=jc.settings.sync_initial_lookback_hours)


async def finish(jc: JobContext, progress: SyncProgress) -> None:
    """Advance the cursor: only now, with every page stored, is everything received before `started` synced."""
    async with unit_of_work(jc.sessionmaker) as session:
        await grants.set_cursor(session, progress.grant_id, progress.started)
    log.info(
        "sync.finished",
        grant_id=progress.grant_id,
        listed=progress.listed,
        new=progress.new,
        updated=progress.updated,
        pages=progress.pages,
    )


async def sync_grant(
    ctx: dict[str, Any],
    grant_id: str,
    since: float | None = None,
    page_token: str | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Job: sync a few pages; if there are more, queue the next part (jobs stay short, so recovery stays fast)."""
    jc = JobContext.from_ctx(ctx)
    async with read_session(jc.sessionmaker) as session:
        known = await grants.get(session, grant_id)
        if known is None:
            # Only grants mailroom has heard of (from Nylas, or `mailroom sync`) are synced by a job: a job
            # forged in Redis must not pull a mailbox of its choosing.
            return {"grant_id": grant_id, "skipped": "unknown grant"}
        if not await grants.may_call_nylas(session, grant_id):
            return {"grant_id": grant_id, "skipped": "grant paused"}
    progress = SyncProgress(
        grant_id=grant_id,
        since=datetime.fromtimestamp(since, tz=UTC) if since is not None else await default_since(jc, grant_id),
        started=datetime.fromtimestamp(started, tz=UTC) if started is not None else datetime.now(UTC),
    )
    try:
        async with asyncio.timeout(jc.settings.job_timeout * 0.9):
            await sync_pages(jc, progress, page_token=page_token, max_pages=jc.settings.sync_pages_per_job)
    except Throttled as exc:
        raise defer_for(exc) from exc
    except (TransientError, TimeoutError) as exc:
        if ctx.get("job_try", 1) < jc.settings.job_max_tries:
            raise Retry(defer=jc.settings.retry_base_delay) from exc
        raise
    if progress.next_page is not None:
        await jc.queue.enqueue_job(
            "sync_grant",
            grant_id,
            progress.since.timestamp(),
            progress.next_page,
            progress.started.timestamp(),
            _job_id=f"sync_grant:{grant_id}:{progress.started.timestamp()}:{progress.next_page}",
        )
    else:
        await finish(jc, progress)
    return {
        "grant_id": grant_id,
        "listed": progress.listed,
        "new": progress.new,
        "more": progress.next_page is not None,
    }


async def sync_recent_emails(jc: JobContext, tick: str) -> dict[str, Any]:
    """Cron body: one sync job per grant that may be called."""
    async with read_session(jc.sessionmaker) as session:
        grant_ids = await grants.syncable(session)
    for grant_id in grant_ids:
        await enqueue_sync_grant(jc.queue, grant_id, tick=tick)
    return {"grants": len(grant_ids)}
