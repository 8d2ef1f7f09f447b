"""Redis under Sentinel: the API, the workers and the CLI find the master by name, follow a failover without a
restart, and every acknowledged notification still becomes an email (the sweeper heals what the failover lost)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from jobs.enqueue import queue_for
from jobs.worker import ResilientWorker
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.commands import mailroom
from tests.harness import api_in_process
from tests.notifications import envelope, message, post
from tests.servers import RedisServer, redis_sentinel, redis_server

pytestmark = pytest.mark.slow

NOTIFICATIONS = 60
FAILOVER_AFTER = 20


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer, RedisServer]]:
    with (
        redis_server(tmp_path / "master", "") as master,
        redis_server(tmp_path / "replica", f"replicaof 127.0.0.1 {master.port}") as replica,
        redis_sentinel(tmp_path / "sentinel", master_port=master.port) as sentinel,
    ):
        yield master, replica, sentinel


async def master_port(sentinel: RedisServer) -> int:
    async with redis.asyncio.Redis(port=sentinel.port) as client:
        _, port = await client.sentinel_get_master_addr_by_name("mymaster")  # type: ignore[no-untyped-call]
        return int(port)


async def until(condition: object, *, what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not await condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out after {within} s waiting for {what}"
        await asyncio.sleep(0.2)


# A pipeline caught by the failover between its commands and its reset keeps its connection (redis-py's reset gives
# it back only when UNWATCH succeeds or fails with ConnectionError), and says so when collected. Seen once in eight
# runs; the connection is closed with the object. Only this test, which makes failovers, allows it.
@pytest.mark.filterwarnings("ignore:Unclosed client session:ResourceWarning")
async def test_a_failover_during_a_stream_of_webhooks_loses_nothing(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_nylas: FakeNylas,
    topology: tuple[RedisServer, RedisServer, RedisServer],
) -> None:
    master, replica, sentinel = topology

    async def replica_in_sync() -> bool:
        async with redis.asyncio.Redis(port=sentinel.port) as client:
            replicas = await client.sentinel_slaves("mymaster")  # type: ignore[no-untyped-call]
        return any(r.get("master-link-status") == "ok" for r in replicas)

    await until(replica_in_sync, what="Sentinel to see the replica in sync", within=30)
    # A job per event (no batch claim), so every notification depends on Redis: the hardest case.
    settings = settings.model_copy(
        update={
            "redis_url": "redis://ignored-with-sentinels/0",
            "redis_sentinels": [f"127.0.0.1:{sentinel.port}"],
            "redis_sentinel_master": "mymaster",
            "batch_worker": False,
        }
    )
    code, _out, err = await mailroom(settings, "stats")
    assert code == 0, err

    worker = ResilientWorker(settings, handle_signals=False, poll_delay=0.05, cron_jobs=[])
    running = asyncio.create_task(worker.run())
    acknowledged: list[str] = []
    try:
        async with api_in_process(settings) as client:
            for n in range(NOTIFICATIONS):
                if n == FAILOVER_AFTER:
                    async with redis.asyncio.Redis(port=sentinel.port) as admin:
                        await admin.sentinel_failover("mymaster")  # type: ignore[no-untyped-call]
                notice = message(message_id=f"m{n}")
                fake_nylas.add_message(notice)
                if (await post(client, envelope(notice))).status_code == 200:
                    acknowledged.append(f"m{n}")
                await asyncio.sleep(0.05)  # a steady stream, spanning the failover

            async def failed_over() -> bool:
                return await master_port(sentinel) == replica.port

            await until(failed_over, what="the failover", within=30)
            assert (await client.get("/readyz")).json()["checks"]["redis"] == "ok", "the API follows the new master"

        queue = queue_for(settings)

        async def all_stored() -> bool:
            await helpers.sweep_now(settings, queue)  # what the sweep cron does every minute
            stored = {e.message_id for e in await helpers.emails(sessionmaker)}
            return stored >= set(acknowledged)

        try:
            await until(all_stored, what="every acknowledged notification to become an email", within=60)
        finally:
            await queue.aclose()
    finally:
        await worker.close()
        await asyncio.gather(running, return_exceptions=True)

    assert len(acknowledged) == NOTIFICATIONS, "storing needs PostgreSQL only: a failover costs no webhook"
    assert len(await helpers.emails(sessionmaker)) == NOTIFICATIONS, "one email each, none twice"

    async def old_master_follows() -> bool:
        async with redis.asyncio.Redis(port=master.port) as old:
            return bool((await old.info("replication"))["role"] == "slave")

    await until(old_master_follows, what="the old master to follow the new one", within=30)
