"""Operators' pauses, honoured by every worker within seconds: everything, one grant, or one stage.

A pause is a row in PostgreSQL (db/pauses.py); each worker reads them at most every `REFRESH_S`. While paused,
nothing is lost and no try is spent: the batch runners leave a paused grant's events (or all) unclaimed, a
`process_event` job for them ends as `paused`, and an email whose next stage or grant is paused stays at that
stage (a kill switch for actions when a rule misbehaves). Resuming queues again what waited, so it goes on where
it stopped.
"""

from __future__ import annotations

import asyncio
import time

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import audit, emails, pauses, webhook_events
from db.pauses import Controls
from db.uow import read_session, unit_of_work
from jobs.enqueue import requeue_event, requeue_stage

REFRESH_S = 2.0
SCOPES = ("all", "grant", "stage")
STAGES = ("process", "classify", "act")
RESUME_BATCH = 10_000


class PauseWatch:
    """What operators set now (pauses, grants' call rates), as this worker sees it: read from PostgreSQL at most
    every REFRESH_S."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._controls = Controls()
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def current(self) -> Controls:
        if self._read_at is not None and time.monotonic() - self._read_at < REFRESH_S:
            return self._controls
        async with self._lock:
            if self._read_at is None or time.monotonic() - self._read_at >= REFRESH_S:
                async with read_session(self._sessionmaker) as session:
                    self._controls = await pauses.current(session)
                self._read_at = time.monotonic()
        return self._controls


def check_scope(scope: str, target: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    if scope == "stage" and target not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}")
    if scope == "grant" and not target:
        raise ValueError("a grant id is needed")
    if scope == "all" and target:
        raise ValueError("everything takes no target")


async def pause(sessionmaker: async_sessionmaker[AsyncSession], *, scope: str, target: str, who: str) -> bool:
    """Pause (recorded in the audit trail); False when it was paused already."""
    check_scope(scope, target)
    async with unit_of_work(sessionmaker) as session:
        done = await pauses.pause(session, scope=scope, target="" if scope == "all" else target, who=who)
        if done:
            await audit.record(session, who=who, action="pause", filter={"scope": scope, "target": target})
    return done


async def resume(
    sessionmaker: async_sessionmaker[AsyncSession],
    queue: ArqRedis,
    *,
    scope: str,
    target: str,
    who: str,
    batch_worker: bool,
) -> int | None:
    """End a pause and queue again what waited for it; None when it was not paused, else how many were queued."""
    check_scope(scope, target)
    target = "" if scope == "all" else target
    async with unit_of_work(sessionmaker) as session:
        if not await pauses.resume(session, scope=scope, target=target):
            return None
        grant_id = target if scope == "grant" else None
        stage = target if scope == "stage" and target != "process" else None
        waiting_emails = await emails.waiting(session, stage=stage, grant_id=grant_id, limit=RESUME_BATCH)
        # Events wait in the table for the batch runners, which claim them again by themselves; a per-event job
        # that ended as `paused` needs queueing again.
        events = (
            []
            if scope == "stage" and target != "process"
            else await webhook_events.waiting_for(session, grant_id=grant_id, limit=RESUME_BATCH)
        )
        asked = {"scope": scope, "target": target}
        await audit.record(session, who=who, action="resume", filter=asked, rows=len(waiting_emails) + len(events))
    for email_id, waiting_stage in waiting_emails:
        await requeue_stage(queue, waiting_stage, email_id)
    for event_id in events:
        await requeue_event(queue, event_id)
    return len(waiting_emails) + len(events)


async def set_rate(
    sessionmaker: async_sessionmaker[AsyncSession], *, grant_id: str, rate: int | None, who: str
) -> None:
    """A grant's Nylas call rate (calls a second; None: back to MAILROOM_NYLAS_RATE_PER_GRANT), held by every worker
    within REFRESH_S; in the audit trail."""
    if not grant_id:
        raise ValueError("a grant id is needed")
    if rate is not None and not 1 <= rate <= 10_000:
        raise ValueError("the rate is calls a second: 1 to 10000")
    async with unit_of_work(sessionmaker) as session:
        await pauses.set_rate(session, grant_id, rate)
        await audit.record(session, who=who, action="rate", filter={"grant": grant_id, "rate": rate})
