"""Repository for ``pauses``: what an operator paused (everything, a grant, a stage) and who did."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Pause


@dataclass(frozen=True)
class Paused:
    everything: bool = False
    grants: frozenset[str] = frozenset()
    stages: frozenset[str] = frozenset()

    def stage(self, stage: str) -> bool:
        return self.everything or stage in self.stages

    def grant(self, grant_id: str | None) -> bool:
        return self.everything or (grant_id is not None and grant_id in self.grants)


async def pause(session: AsyncSession, *, scope: str, target: str, who: str) -> bool:
    """True when this paused it (False: it was paused already)."""
    stmt = insert(Pause).values(scope=scope, target=target, paused_by=who).on_conflict_do_nothing()
    return bool((await session.execute(stmt.returning(Pause.scope))).first())


async def resume(session: AsyncSession, *, scope: str, target: str) -> bool:
    """True when it was paused."""
    stmt = delete(Pause).where(Pause.scope == scope, Pause.target == target).returning(Pause.scope)
    return bool((await session.execute(stmt)).first())


async def all_pauses(session: AsyncSession) -> list[Pause]:
    return list((await session.execute(select(Pause).order_by(Pause.paused_at))).scalars())


async def current(session: AsyncSession) -> Paused:
    rows = await all_pauses(session)
    return Paused(
        everything=any(p.scope == "all" for p in rows),
        grants=frozenset(p.target for p in rows if p.scope == "grant"),
        stages=frozenset(p.target for p in rows if p.scope == "stage"),
    )
