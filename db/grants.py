"""Repository for ``grants``: whether a mailbox is active, expired or deleted, ordered by notification time."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Grant


async def ensure(session: AsyncSession, grant_id: str) -> None:
    """Know about a grant the first time one of its messages arrives."""
    await session.execute(insert(Grant).values(grant_id=grant_id).on_conflict_do_nothing())


async def apply_state(
    session: AsyncSession,
    *,
    grant_id: str,
    status: str,
    state_at: datetime,
    email: str | None = None,
    provider: str | None = None,
) -> bool:
    """Set the grant's status unless a newer grant notification was applied already; True if written."""
    stmt = insert(Grant).values(grant_id=grant_id, status=status, state_at=state_at, email=email, provider=provider)
    excluded = stmt.excluded
    upsert = stmt.on_conflict_do_update(
        index_elements=[Grant.grant_id],
        set_={
            "status": excluded.status,
            "state_at": excluded.state_at,
            "email": func.coalesce(excluded.email, Grant.email),
            "provider": func.coalesce(excluded.provider, Grant.provider),
            "updated_at": func.now(),
        },
        where=(Grant.state_at.is_(None)) | (Grant.state_at <= excluded.state_at),
    ).returning(Grant.grant_id)
    return (await session.execute(upsert)).scalar_one_or_none() is not None


async def get(session: AsyncSession, grant_id: str) -> Grant | None:
    return await session.get(Grant, grant_id)
