"""Repository for the dashboard's history: samples of queue depth and the stage counters, one row per interval."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import HistorySample


async def record(session: AsyncSession, *, at: datetime, figures: dict[str, Any]) -> bool:
    """True when this wrote the interval's row (False: another API sampled it first)."""
    stmt = insert(HistorySample).values(at=at, **figures).on_conflict_do_nothing().returning(HistorySample.at)
    return bool((await session.execute(stmt)).first())


async def prune(session: AsyncSession, *, before: datetime) -> None:
    await session.execute(delete(HistorySample).where(HistorySample.at < before))


async def since(session: AsyncSession, start: datetime) -> list[HistorySample]:
    stmt = select(HistorySample).where(HistorySample.at >= start).order_by(HistorySample.at)
    return list((await session.execute(stmt)).scalars())
