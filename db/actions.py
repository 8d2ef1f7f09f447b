"""Repository for ``actions``: side effects at Nylas, keyed so that none is carried out twice."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Action
from db.states import ActionStatus


async def plan(
    session: AsyncSession, *, email_id: int, grant_id: str, kind: str, params: dict[str, Any], idempotency_key: str
) -> None:
    await session.execute(
        insert(Action)
        .values(email_id=email_id, grant_id=grant_id, kind=kind, params=params, idempotency_key=idempotency_key)
        .on_conflict_do_nothing(index_elements=[Action.idempotency_key])
    )


async def for_email(session: AsyncSession, email_id: int) -> list[Action]:
    stmt = select(Action).where(Action.email_id == email_id).order_by(Action.id)
    return list((await session.execute(stmt)).scalars())


async def mark_executing(session: AsyncSession, action_id: int) -> None:
    """Written (and committed) before the call to Nylas: after a crash, `executing` means "maybe done"."""
    await session.execute(
        update(Action)
        .where(Action.id == action_id)
        .values(status=ActionStatus.EXECUTING, attempts=Action.attempts + 1, error=None)
    )


async def mark_done(
    session: AsyncSession, action_id: int, *, status: ActionStatus, result: dict[str, Any] | None
) -> None:
    await session.execute(
        update(Action).where(Action.id == action_id).values(status=status, result=result, done_at=func.now())
    )


async def mark_failed(session: AsyncSession, action_id: int, *, error: str) -> None:
    await session.execute(
        update(Action).where(Action.id == action_id).values(status=ActionStatus.FAILED, error=error[:4000])
    )
