"""Repository for ``webhook_destinations``: what the health check last saw of the application's destinations at Nylas,
and since when one has been unhealthy (the start of what Nylas may have skipped)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import WebhookDestination
from db.states import DestinationStatus


@dataclass(frozen=True)
class Seen:
    """One destination as Nylas listed it."""

    id: str
    url: str
    status: DestinationStatus
    status_updated_at: datetime | None


async def all_destinations(session: AsyncSession) -> list[WebhookDestination]:
    return list((await session.execute(select(WebhookDestination).order_by(WebhookDestination.id))).scalars())


async def record(session: AsyncSession, seen: list[Seen], *, now: datetime) -> dict[str, WebhookDestination]:
    """Store what Nylas listed (and forget destinations it no longer lists); returns the rows as they were before."""
    before = {row.id: row for row in await all_destinations(session)}
    for each in seen:
        earlier = before.get(each.id)
        healthy = each.status is DestinationStatus.ACTIVE
        unhealthy_since = None if healthy else (earlier.unhealthy_since if earlier and earlier.unhealthy_since else now)
        values = {
            "url": each.url,
            "status": each.status,
            "status_updated_at": each.status_updated_at,
            "unhealthy_since": unhealthy_since,
            "backfilled_to": None if healthy else (earlier.backfilled_to if earlier else None),
            "checked_at": now,
        }
        stmt = insert(WebhookDestination).values(id=each.id, **values)
        await session.execute(stmt.on_conflict_do_update(index_elements=[WebhookDestination.id], set_=values))
    gone = set(before) - {each.id for each in seen}
    if gone:
        await session.execute(delete(WebhookDestination).where(WebhookDestination.id.in_(gone)))
    # The ORM rows above were read before the writes: detach them, so they keep what they said then.
    session.expunge_all()
    return before


async def set_backfilled_to(session: AsyncSession, destination_id: str, to: datetime) -> None:
    row = await session.get(WebhookDestination, destination_id)
    if row is not None:
        row.backfilled_to = to


async def count_by_status(session: AsyncSession) -> dict[str, int]:
    """Destinations by status, every status present (0 where none): the metric's series exist from the start."""
    rows = await session.execute(select(WebhookDestination.status, func.count()).group_by(WebhookDestination.status))
    counts = {status.value: 0 for status in DestinationStatus}
    counts.update({str(status): int(n) for status, n in rows.all()})
    return counts


async def unhealthy(session: AsyncSession) -> list[WebhookDestination]:
    stmt = select(WebhookDestination).where(WebhookDestination.status != DestinationStatus.ACTIVE)
    return list((await session.execute(stmt.order_by(WebhookDestination.id))).scalars())
