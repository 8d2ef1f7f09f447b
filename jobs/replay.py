"""Dead letters back to work: by id or by filter (stage, grant, time window, error text). Shared by CLI and API."""

from __future__ import annotations

from dataclasses import asdict

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import audit, dead_letters
from db.dead_letters import ReplayFilter, ReplayPlan
from db.uow import unit_of_work
from jobs.enqueue import requeue_event, requeue_stage

__all__ = ["ReplayFilter", "ReplayPlan", "replay"]


async def replay(
    sessionmaker: async_sessionmaker[AsyncSession],
    queue: ArqRedis,
    f: ReplayFilter,
    *,
    who: str,
    dry_run: bool = False,
) -> ReplayPlan:
    """Reset what matches to a fresh try budget and queue it; with `dry_run`, only say what would be. A replay that
    did something is in the audit trail, written with the reset (one transaction)."""
    async with unit_of_work(sessionmaker) as session:
        found = await dead_letters.plan(session, f)
        if dry_run:
            return found
        await dead_letters.reset(session, found)
        if found.event_ids or found.emails:
            asked = {k: v for k, v in asdict(f).items() if v not in (None, (), False)} or {"all": True}
            await audit.record(
                session, who=who, action="replay", filter=asked, rows=len(found.event_ids) + len(found.emails)
            )
    for event_id in found.event_ids:
        await requeue_event(queue, event_id)
    for email_id, stage in found.emails:
        await requeue_stage(queue, stage, email_id)
    return found
