"""Repository for ``grants``: whether a mailbox is active, expired or deleted, ordered by notification time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, case, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Grant
from db.states import GrantStatus
from db.uow import execute_core

_GRANTS = cast(Table, Grant.__table__)
_ENSURE = insert(_GRANTS).values(grant_id=bindparam("v_grant_id")).on_conflict_do_nothing()
# The same, answering the grant's status in the one round trip (a known grant is read, not written).
_ENSURE_STATUS = text(
    "WITH added AS (INSERT INTO grants (grant_id) VALUES (:v_grant_id) ON CONFLICT DO NOTHING RETURNING status) "
    "SELECT status FROM added UNION ALL SELECT status FROM grants WHERE grant_id = :v_grant_id LIMIT 1"
)
_MAY_CALL = select(_GRANTS.c.paused_at, _GRANTS.c.status).where(_GRANTS.c.grant_id == bindparam("grant_id"))


async def ensure(session: AsyncSession, grant_id: str) -> None:
    """Know about a grant the first time one of its messages arrives."""
    await execute_core(session, _ENSURE, {"v_grant_id": grant_id})


async def ensure_status(session: AsyncSession, grant_id: str) -> str:
    """`ensure`, answering the grant's status (`deleted`: its mail must not be stored again)."""
    status = (await execute_core(session, _ENSURE_STATUS, {"v_grant_id": grant_id})).scalar_one_or_none()
    if status is None:
        # A concurrent transaction inserted the grant while this statement ran: the insert then did nothing, and the
        # row it waited for is not in this statement's snapshot. The next statement sees it.
        status = (await execute_core(session, _MAY_CALL, {"grant_id": grant_id})).one()[1]
    return str(status)


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


async def pause(session: AsyncSession, grant_id: str, *, reason: str) -> None:
    """Stop calling Nylas for this grant until a grant.updated says its credentials work again."""
    await session.execute(
        insert(Grant)
        .values(grant_id=grant_id, paused_at=func.now(), paused_reason=reason)
        .on_conflict_do_update(
            index_elements=[Grant.grant_id],
            set_={"paused_at": func.coalesce(Grant.paused_at, func.now()), "paused_reason": reason},
        )
    )


async def resume(session: AsyncSession, grant_id: str) -> datetime | None:
    """Clear the pause; returns when it began (the gap to backfill), or None if it was not paused."""
    paused = await session.execute(select(Grant.paused_at).where(Grant.grant_id == grant_id).with_for_update())
    paused_at = paused.scalar_one_or_none()
    await session.execute(
        update(Grant)
        .where(Grant.grant_id == grant_id)
        .values(paused_at=None, paused_reason=None, updated_at=func.now())
    )
    return paused_at


async def mark_deleted(session: AsyncSession, grant_id: str) -> None:
    await session.execute(
        update(Grant)
        .where(Grant.grant_id == grant_id)
        .values(
            deleted_at=func.now(),
            paused_at=func.coalesce(Grant.paused_at, func.now()),
            paused_reason="deleted",
        )
    )


async def may_call_nylas(session: AsyncSession, grant_id: str) -> bool:
    row = (await execute_core(session, _MAY_CALL, {"grant_id": grant_id})).one_or_none()
    return row is None or (row[0] is None and row[1] == GrantStatus.ACTIVE)


async def syncable(session: AsyncSession) -> list[str]:
    stmt = (
        select(Grant.grant_id)
        .where(Grant.status == GrantStatus.ACTIVE, Grant.paused_at.is_(None))
        .order_by(Grant.grant_id)
    )
    return list((await session.execute(stmt)).scalars())


async def set_cursor(session: AsyncSession, grant_id: str, cursor: datetime) -> None:
    await session.execute(
        update(Grant)
        .where(Grant.grant_id == grant_id)
        .values(sync_cursor=func.greatest(func.coalesce(Grant.sync_cursor, cursor), cursor), last_synced_at=func.now())
    )


GRANT_STATES = ("active", "paused", "expired", "deleted")


async def count_by_state(session: AsyncSession) -> dict[str, int]:
    """Grants by what mailroom may do with them: active, paused (refused credentials), expired, deleted."""
    state = case(
        (Grant.status == GrantStatus.DELETED, "deleted"),
        (Grant.status == GrantStatus.EXPIRED, "expired"),
        (Grant.paused_at.is_not(None), "paused"),
        else_="active",
    )
    counted = {row[0]: int(row[1]) for row in await session.execute(select(state, func.count()).group_by(state))}
    return {name: int(counted.get(name, 0)) for name in GRANT_STATES}


async def oldest_sync(session: AsyncSession) -> datetime | None:
    """The least recent successful sync among grants that should be synced (never synced: since it was known)."""
    stmt = select(func.min(func.coalesce(Grant.last_synced_at, Grant.created_at))).where(
        Grant.status == GrantStatus.ACTIVE, Grant.paused_at.is_(None)
    )
    return cast(datetime | None, await session.scalar(stmt))


@dataclass(frozen=True, slots=True)
class GrantState:
    status: str
    paused: bool

    @property
    def may_call_nylas(self) -> bool:
        return not self.paused and self.status == GrantStatus.ACTIVE


# `ensure_status` for many grants in one round trip.
_ENSURE_MANY = text(
    """
    WITH wanted AS (SELECT DISTINCT unnest(CAST(:grant_ids AS text[])) AS grant_id ORDER BY 1),
    added AS (
        INSERT INTO grants (grant_id) SELECT grant_id FROM wanted ON CONFLICT DO NOTHING
        RETURNING grant_id, status, paused_at IS NOT NULL
    )
    SELECT * FROM added
    UNION ALL
    SELECT g.grant_id, g.status, g.paused_at IS NOT NULL FROM grants g JOIN wanted USING (grant_id)
    """
)


_STATES = text("SELECT grant_id, status, paused_at IS NOT NULL FROM grants WHERE grant_id = ANY(CAST(:g AS text[]))")


async def ensure_many(session: AsyncSession, grant_ids: Sequence[str]) -> dict[str, GrantState]:
    """Know about each grant and answer its state."""
    wanted = sorted(set(grant_ids))
    rows = await execute_core(session, _ENSURE_MANY, {"grant_ids": wanted})
    states = {grant_id: GrantState(status, bool(paused)) for grant_id, status, paused in rows}
    if missing := [g for g in wanted if g not in states]:
        # Inserted by a concurrent transaction while the statement ran (two batches of a new grant's mail): the
        # insert waited for it and did nothing, and its row was not in the statement's snapshot. The next sees it.
        for grant_id, status, paused in await execute_core(session, _STATES, {"g": missing}):
            states[grant_id] = GrantState(status, bool(paused))
    return states
