"""Repository for operators' controls: ``pauses`` (everything, a grant, a stage, and who paused it) and the grants'
Nylas call rates set at runtime (``grants.nylas_rate``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Grant, Pause


@dataclass(frozen=True)
class Controls:
    everything: bool = False
    grants: frozenset[str] = frozenset()
    stages: frozenset[str] = frozenset()
    rates: Mapping[str, int] = field(default_factory=dict)  # grant -> calls a second, where an operator set one

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


async def rates(session: AsyncSession) -> dict[str, int]:
    """Grants whose Nylas call rate an operator set, and the rate."""
    found = await session.execute(select(Grant.grant_id, Grant.nylas_rate).where(Grant.nylas_rate.is_not(None)))
    return {grant_id: int(rate) for grant_id, rate in found if rate is not None}


async def current(session: AsyncSession) -> Controls:
    rows = await all_pauses(session)
    return Controls(
        everything=any(p.scope == "all" for p in rows),
        grants=frozenset(p.target for p in rows if p.scope == "grant"),
        stages=frozenset(p.target for p in rows if p.scope == "stage"),
        rates=await rates(session),
    )


async def set_rate(session: AsyncSession, grant_id: str, rate: int | None) -> None:
    """An operator's call rate for the grant (None: back to the default); known from then on if it was not."""
    stmt = insert(Grant).values(grant_id=grant_id, nylas_rate=rate)
    await session.execute(stmt.on_conflict_do_update(index_elements=[Grant.grant_id], set_={"nylas_rate": rate}))
