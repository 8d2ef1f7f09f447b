"""Repository for ``cron_runs``: a tick is claimed once, by whichever worker inserts it first."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import CronRun


async def claim(session: AsyncSession, *, name: str, tick_at: datetime, worker: str) -> int | None:
    stmt = (
        insert(CronRun)
        .values(name=name, tick_at=tick_at, worker=worker)
        .on_conflict_do_nothing(index_elements=[CronRun.name, CronRun.tick_at])
        .returning(CronRun.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def finish(session: AsyncSession, run_id: int, *, result: dict[str, Any] | None, error: str | None) -> None:
    await session.execute(
        update(CronRun).where(CronRun.id == run_id).values(finished_at=func.now(), result=result, error=error)
    )
