"""Repository for ``cron_runs``: a tick is claimed once, by whichever worker inserts it first; a job's runs never
overlap (a transaction-scoped advisory lock held for the run)."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from db.errors import translate_errors
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


async def latest(session: AsyncSession) -> list[dict[str, Any]]:
    latest = select(CronRun.name, func.max(CronRun.tick_at).label("tick_at")).group_by(CronRun.name).subquery()
    rows = await session.execute(
        select(CronRun).join(latest, (CronRun.name == latest.c.name) & (CronRun.tick_at == latest.c.tick_at))
    )
    return [
        {
            "name": run.name,
            "last_tick": run.tick_at.isoformat(),
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "result": run.result,
            "error": run.error,
        }
        for run in rows.scalars()
    ]


@asynccontextmanager
async def exclusive(engine: AsyncEngine, name: str) -> AsyncIterator[bool]:
    """Hold the job's lock for the block: yields False when another run holds it.

    A transaction-scoped lock in a transaction held open for the run, so it is safe behind PgBouncer in transaction
    pooling mode (a session lock would stay on whichever server connection took it, and its unlock could run on
    another); it ends with the transaction, or with the connection if the worker dies.
    """
    key = zlib.crc32(f"mailroom:cron:{name}".encode())
    with translate_errors():
        async with engine.connect() as connection, connection.begin():
            yield bool(await connection.scalar(select(func.pg_try_advisory_xact_lock(key))))
