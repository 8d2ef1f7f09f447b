"""Connections are a budget: each process opens a known number at its settings, shows them on /metrics, and a worker
that cannot get one waits and says so instead of crashing or flooding the log."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from db.engine import create_engine, create_sessionmaker
from jobs.worker import ResilientWorker
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.commands import mailroom
from tests.harness import api_in_process
from tests.notifications import envelope, message, post
from tests.servers import tcp_postgres


async def hog_every_connection(url: str) -> list[asyncpg.Connection]:
    """Take connections until PostgreSQL says it has no more, as other services sharing it would."""
    held: list[asyncpg.Connection] = []
    while True:
        try:
            held.append(await asyncpg.connect(url))
        except asyncpg.TooManyConnectionsError:
            return held


async def test_metrics_show_each_process_budget_and_what_it_holds(settings: Settings) -> None:
    settings = settings.model_copy(update={"db_pool_size": 3, "db_max_overflow": 2})
    worker = ResilientWorker(settings, handle_signals=False, poll_delay=0.05, cron_jobs=[])
    running = asyncio.create_task(worker.run())
    try:
        async with api_in_process(settings) as client:
            deadline = time.monotonic() + 15
            while True:
                series = scraped(await client.get("/metrics"))
                if any(process.startswith("worker:") for process, _ in series["mailroom_connections_budget"]):
                    break
                assert time.monotonic() < deadline, "no worker's connections on /metrics"
                await asyncio.sleep(0.1)
            series = scraped(await client.get("/metrics"))  # after scrapes that used the database
    finally:
        await worker.close()
        await asyncio.gather(running, return_exceptions=True)

    budgets = {process.split(":")[0]: value for (process, _), value in series["mailroom_connections_budget"].items()}
    assert budgets == {"api": 5, "worker": 6}, "pool 3 + overflow 2; the worker's LISTEN connection on top"
    held = series["mailroom_connections_open"]
    for (process, server), value in held.items():
        assert 0 <= value <= budgets.get(process.split(":")[0], 1000), (process, server)
    assert {server for _, server in held} == {"postgresql", "redis"}
    api_postgres = [
        value for (process, server), value in held.items() if process.startswith("api:") and server == "postgresql"
    ]
    assert api_postgres[0] >= 1, "the earlier scrapes' connection, kept in the pool"


def scraped(response: httpx.Response) -> dict[str, dict[tuple[str, str], float]]:
    found: dict[str, dict[tuple[str, str], float]] = {
        "mailroom_connections_budget": {},
        "mailroom_connections_open": {},
    }
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name in found:
                found[sample.name][(sample.labels["process"], sample.labels["server"])] = sample.value
    return found


@pytest.mark.slow
async def test_a_worker_out_of_connections_waits_says_so_and_carries_on(
    settings: Settings, fake_nylas: FakeNylas
) -> None:
    with tcp_postgres(config="max_connections = 12\nsuperuser_reserved_connections = 0") as postgres:
        settings = settings.model_copy(update={"database_url": postgres.url})
        code, _, err = await mailroom(settings, "migrate")
        assert code == 0, err
        fake_nylas.add_message(message())
        async with api_in_process(settings) as client:
            assert (await post(client, envelope(message()))).status_code == 200

        held = await hog_every_connection(postgres.url)
        worker = ResilientWorker(settings, handle_signals=False, poll_delay=0.05, cron_jobs=[])
        with structlog.testing.capture_logs() as logs:
            running = asyncio.create_task(worker.run())
            try:
                deadline = time.monotonic() + 15
                while not any(e["event"] == "worker.database_unavailable" for e in logs):
                    assert time.monotonic() < deadline, "the worker never said it was waiting for PostgreSQL"
                    assert not running.done(), "the worker stopped instead of waiting"
                    await asyncio.sleep(0.1)
                await asyncio.sleep(3)  # a while without connections: what it logs meanwhile is counted below
                assert not running.done(), "still waiting, not crashed"
                waiting = [e for e in logs if e["log_level"] in ("warning", "error")]
                for connection in held:
                    await connection.close()

                engine = create_engine(postgres.url, pool_size=1)
                sessionmaker: async_sessionmaker[AsyncSession] = create_sessionmaker(engine)
                try:
                    while [e.status for e in await helpers.events(sessionmaker)] != ["processed"]:
                        assert time.monotonic() < deadline + 30, "not processed once connections were free"
                        await asyncio.sleep(0.2)
                finally:
                    await engine.dispose()
            finally:
                await worker.close()
                await asyncio.gather(running, return_exceptions=True)
        assert len(waiting) <= 3, f"said once, not once per try: {[e['event'] for e in waiting]}"
        assert any(e["event"] == "worker.database_back" for e in logs)
