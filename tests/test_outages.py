"""Outages at the edge: PostgreSQL down means nothing is acknowledged; Redis down still acknowledges what is stored."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from arq.connections import ArqRedis
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from db.engine import create_engine, create_sessionmaker
from mailroom.throwaway_servers import ThrowawayRedis, migrated_throwaway_postgres
from tests import helpers
from tests.harness import running_api
from tests.notifications import envelope, message, post


async def test_database_down_is_503_and_nothing_is_acknowledged(
    settings: Settings, redis: ArqRedis, tmp_path: Path
) -> None:
    """Nylas retries a 503; a 2xx would have been a promise we could not keep."""
    postgres = await migrated_throwaway_postgres(tmp_path)
    engine = create_engine(postgres.url, pool_size=1)
    sessionmaker = create_sessionmaker(engine)
    try:
        async with running_api(settings.model_copy(update={"database_url": postgres.url})) as client:
            assert (await post(client, envelope(message(), notification_id="evt_before"))).status_code == 200

            await asyncio.to_thread(postgres.stop)
            response = await post(client, envelope(message(), notification_id="evt_during"))
            assert response.status_code == 503
            assert response.json()["error"] == "database_unavailable"
            assert response.headers["retry-after"]

            await asyncio.to_thread(postgres.start)
            # Nylas's retry of the refused notification is stored once the database is back.
            retried: list[int] = []

            async def retry_succeeds() -> bool:
                response = await post(client, envelope(message(), notification_id="evt_during", attempt=2))
                retried.append(response.status_code)
                return response.status_code == 200

            deadline = asyncio.get_running_loop().time() + 15
            while not await retry_succeeds():
                assert asyncio.get_running_loop().time() < deadline, f"never recovered: {retried}"
                await asyncio.sleep(0.1)
            assert set(retried) <= {200, 503}

        stored = [e.notification_id for e in await helpers.events(sessionmaker)]
        assert stored == ["evt_before", "evt_during"]
    finally:
        await engine.dispose()
        await asyncio.to_thread(postgres.cleanup)


@pytest.mark.parametrize(("batch_worker", "answer"), [(True, "queued"), (False, "received")])
async def test_redis_down_still_acknowledges_and_the_event_waits_in_postgresql(
    batch_worker: bool, answer: str, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """The event is safe in PostgreSQL, `received`: the batch workers' queue is that table (a webhook needs no
    Redis at all); with batches off, it is what the sweeper looks for, and the answer says the job is not queued."""
    own_redis = ThrowawayRedis(tmp_path)
    chosen = settings.model_copy(update={"redis_url": own_redis.url, "batch_worker": batch_worker})
    async with running_api(chosen) as client:
        assert (await post(client, envelope(message(), notification_id="evt_up"))).json()["status"] == "queued"
        own_redis.stop()

        response = await post(client, envelope(message(), notification_id="evt_down"))

    (_, down) = await helpers.events(sessionmaker)
    assert response.json() == {"status": answer, "event_id": down.id}
    assert (down.notification_id, down.status) == ("evt_down", "received")


async def test_nylas_retry_of_an_unqueued_event_queues_it(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
) -> None:
    """With batches off, a stored event whose enqueue failed is queued when Nylas delivers it again."""
    settings = settings.model_copy(update={"batch_worker": False})
    unreachable = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    async with running_api(unreachable) as client:
        first = await post(client, envelope(message(), notification_id="evt_heal"))
    assert first.json()["status"] == "received"

    async with running_api(settings) as client:
        again = await post(client, envelope(message(), notification_id="evt_heal", attempt=2))

    assert again.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
    (event,) = await helpers.events(sessionmaker)
    assert event.status == "queued"
    assert await helpers.queued_event_ids(redis) == [event.id]


async def test_liveness_needs_no_dependency(settings: Settings) -> None:
    dead = settings.model_copy(
        update={"database_url": "postgresql://nobody@127.0.0.1:1/none", "redis_url": "redis://127.0.0.1:1"}
    )
    async with running_api(dead) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200


async def test_unreachable_database_is_503_quickly(settings: Settings) -> None:
    dead = settings.model_copy(update={"database_url": "postgresql://nobody@127.0.0.1:1/none"})
    async with running_api(dead) as client:
        started = asyncio.get_running_loop().time()
        response: httpx.Response = await post(client, envelope(message()))
        elapsed = asyncio.get_running_loop().time() - started
    assert response.status_code == 503
    assert elapsed < 10, "Nylas gives up on an answer after 10 s"


async def test_redis_down_is_503_on_metrics_queue_and_the_dashboard_data(settings: Settings) -> None:
    """Prometheus and KEDA poll these: an outage they can tell from a bug (503, never 500)."""
    unreachable = settings.model_copy(
        update={"redis_url": "redis://127.0.0.1:1/0", "admin_token": SecretStr("tok-monitoring")}
    )
    async with running_api(unreachable) as client:
        for path in ("/metrics", "/queue", "/api/overview"):
            response = await client.get(path, headers={"Authorization": "Bearer tok-monitoring"})
            assert response.status_code == 503, (path, response.text)
            assert response.json()["error"] in ("redis_unavailable", "unavailable"), path
