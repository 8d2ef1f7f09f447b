"""Reading back what the system stored, for assertions."""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Email, Grant, WebhookEvent


async def events(sessionmaker: async_sessionmaker[AsyncSession]) -> list[WebhookEvent]:
    async with sessionmaker() as session:
        return list((await session.execute(select(WebhookEvent).order_by(WebhookEvent.id))).scalars())


async def emails(sessionmaker: async_sessionmaker[AsyncSession]) -> list[Email]:
    async with sessionmaker() as session:
        return list((await session.execute(select(Email).order_by(Email.id))).scalars())


async def grant(sessionmaker: async_sessionmaker[AsyncSession], grant_id: str) -> Grant | None:
    async with sessionmaker() as session:
        return await session.get(Grant, grant_id)


async def row_counts(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
    async with sessionmaker() as session:
        result = await session.execute(
            text(
                "SELECT (SELECT count(*) FROM webhook_events) AS webhook_events,"
                " (SELECT count(*) FROM emails) AS emails, (SELECT count(*) FROM grants) AS grants"
            )
        )
        return dict(result.mappings().one())


async def queued_job_ids(redis: ArqRedis, queue_name: str = "mailroom:test") -> list[str]:
    return [job_id.decode() for job_id in await redis.zrange(queue_name, 0, -1)]
