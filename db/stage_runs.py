"""Repository for ``stage_runs``: every try of every stage, the timeline an operator reads."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import StageRun


async def start(
    session: AsyncSession,
    *,
    stage: str,
    attempt: int,
    event_id: int | None = None,
    email_id: int | None = None,
    grant_id: str | None = None,
    job_id: str | None = None,
) -> int:
    stmt = (
        insert(StageRun)
        .values(
            stage=stage,
            attempt=attempt,
            event_id=event_id,
            email_id=email_id,
            grant_id=grant_id,
            job_id=job_id,
            status="running",
        )
        .returning(StageRun.id)
    )
    return (await session.execute(stmt)).scalar_one()


async def finish(
    session: AsyncSession,
    run_id: int,
    *,
    status: str,
    email_id: int | None = None,
    error: str | None = None,
    traceback: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    values: dict[str, Any] = {"status": status, "finished_at": func.now(), "error": error, "traceback": traceback}
    if email_id is not None:
        values["email_id"] = email_id
    if detail is not None:
        values["detail"] = detail
    await session.execute(update(StageRun).where(StageRun.id == run_id).values(**values))


async def timeline(session: AsyncSession, *, email_id: int | None, event_id: int | None) -> list[StageRun]:
    """Every run for the email and for the event that brought it, oldest first."""
    conditions = []
    if email_id is not None:
        conditions.append(StageRun.email_id == email_id)
    if event_id is not None:
        conditions.append(StageRun.event_id == event_id)
    if not conditions:
        return []
    stmt = select(StageRun).where(or_(*conditions)).order_by(StageRun.started_at, StageRun.id)
    return list((await session.execute(stmt)).scalars())
