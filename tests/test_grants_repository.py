"""db.grants against a real PostgreSQL, where concurrency decides the answer."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from db import grants


async def test_ensure_status_answers_while_another_transaction_adds_the_same_grant(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The insert waits for the other transaction and then does nothing, and the row it waited for is not in its own
    statement's snapshot: the status must still come back (it raised NoResultFound, failing a process run)."""
    async with sessionmaker() as first, first.begin():
        assert await grants.ensure_status(first, "raced") == "active"

        async def second_ensure() -> str:
            async with sessionmaker() as second, second.begin():
                return await grants.ensure_status(second, "raced")

        waiting = asyncio.create_task(second_ensure())
        deadline = asyncio.get_running_loop().time() + 10
        while not await _someone_waits_on_a_lock(sessionmaker):
            assert asyncio.get_running_loop().time() < deadline, "the second insert never waited for the first"
            await asyncio.sleep(0.01)
        assert not waiting.done()
    assert await asyncio.wait_for(waiting, timeout=10) == "active"


async def test_ensure_many_answers_every_grant_while_another_batch_adds_them(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Two batches of two new grants' mail claimed at once: the second must still learn both grants' states (an
    absent one sent the batch's events to the slow per-event path)."""
    async with sessionmaker() as first, first.begin():
        assert set(await grants.ensure_many(first, ["new_a", "new_b"])) == {"new_a", "new_b"}

        async def second_ensure() -> dict[str, grants.GrantState]:
            async with sessionmaker() as second, second.begin():
                return await grants.ensure_many(second, ["new_b", "new_a", "known"])

        waiting = asyncio.create_task(second_ensure())
        deadline = asyncio.get_running_loop().time() + 10
        while not await _someone_waits_on_a_lock(sessionmaker):
            assert asyncio.get_running_loop().time() < deadline, "the second insert never waited for the first"
            await asyncio.sleep(0.01)
    states = await asyncio.wait_for(waiting, timeout=10)
    assert states == {g: grants.GrantState("active", False) for g in ("new_a", "new_b", "known")}


async def _someone_waits_on_a_lock(sessionmaker: async_sessionmaker[AsyncSession]) -> bool:
    async with sessionmaker() as session:
        waiting = await session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)
