"""Scale-out without containers: two API processes and three worker processes on one PostgreSQL and one Redis.

A few thousand notifications, a third of them delivered twice and to either API: every email exactly once, every
stage exactly once, every sweeper tick once across the three workers.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from db.models import CronRun, Email, StageRun, WebhookEvent
from tests import helpers
from tests.commands import MAILROOM, cli_env
from tests.notifications import envelope, message, post

NOTIFICATIONS = int(os.environ.get("SCALE_NOTIFICATIONS", "1000"))


def process_env(settings: Settings) -> dict[str, str]:
    return cli_env(settings) | {
        "MAILROOM_WEBHOOK_SECRETS": "test_webhook_secret",
        "MAILROOM_ACTIONS_DRY_RUN": "true",
        "MAILROOM_WORKER_CONCURRENCY": "30",
        "MAILROOM_SWEEP_INTERVAL_SECONDS": "1",
        "MAILROOM_LOG_LEVEL": "INFO",
    }


@asynccontextmanager
async def running(
    role: str, count: int, env: dict[str, str], logs: Path
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Processes whose logs go to files (a pipe nobody reads fills up and stops a chatty process)."""
    started = []
    for n in range(count):
        extra = {"MAILROOM_PORT": env["PORTS"].split(",")[n]} if role == "api" else {}
        with (logs / f"{role}-{n}.log").open("wb") as log_file:
            started.append(
                await asyncio.create_subprocess_exec(
                    MAILROOM, role, env=env | extra, stdout=asyncio.subprocess.DEVNULL, stderr=log_file
                )
            )
    try:
        yield started
    finally:
        for process in started:
            if process.returncode is None:
                process.terminate()
        for process in started:
            await asyncio.wait_for(process.wait(), 30)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_two_apis_three_workers_every_email_once_every_tick_once(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    ports = [helpers.free_port(), helpers.free_port()]
    env = process_env(settings) | {"PORTS": ",".join(map(str, ports))}
    payloads = [envelope(message(grant_id=f"g{n % 20}", message_id=f"m{n}")) for n in range(NOTIFICATIONS)]
    deliveries = payloads + random.Random(7).sample(payloads, NOTIFICATIONS // 3)
    random.Random(8).shuffle(deliveries)

    # Ingest through both APIs first: on two cores, APIs and busy workers together would measure CPU
    # contention, not correctness (the benchmark measures speed).
    async with running("api", 2, env, tmp_path):
        clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) for port in ports]
        try:
            for client in clients:
                await wait_healthy(client)
            gate = asyncio.Semaphore(20)

            async def deliver(n: int, payload: dict[str, object]) -> int:
                async with gate:
                    return (await post(clients[n % 2], payload)).status_code

            started = time.monotonic()
            codes = await asyncio.gather(*(deliver(n, p) for n, p in enumerate(deliveries)))
            posted = time.monotonic() - started
        finally:
            for client in clients:
                await client.aclose()
    assert set(codes) == {200}

    async def done() -> int:
        async with sessionmaker() as session:
            return int(await session.scalar(select(func.count()).where(Email.pipeline_state == "done")) or 0)

    async with running("worker", 3, env, tmp_path):
        started = time.monotonic()
        while (finished := await done()) < NOTIFICATIONS:
            assert time.monotonic() - started < 200, f"only {finished} of {NOTIFICATIONS} done"
            await asyncio.sleep(0.5)
        drained = time.monotonic() - started
        await asyncio.sleep(2)  # a couple more sweeper ticks with all three workers idle and competing
    logs = [(tmp_path / f"worker-{n}.log").read_bytes() for n in range(3)]
    print(f"posted {len(deliveries)} deliveries in {posted:.1f} s; 3 workers drained them in {drained:.1f} s")  # noqa: T201

    async with sessionmaker() as session:
        events = await session.scalar(select(func.count()).select_from(WebhookEvent))
        processed = await session.scalar(select(func.count()).where(WebhookEvent.status == "processed"))
        emails = await session.scalar(select(func.count()).select_from(Email))
        runs = dict(
            (
                await session.execute(
                    select(StageRun.stage, func.count()).where(StageRun.status == "succeeded").group_by(StageRun.stage)
                )
            ).all()
        )
        ticks = list((await session.execute(select(CronRun.tick_at).where(CronRun.name == "sweep"))).scalars())
    assert (events, processed, emails) == (NOTIFICATIONS, NOTIFICATIONS, NOTIFICATIONS)
    assert runs == {"process": NOTIFICATIONS, "classify": NOTIFICATIONS, "act": NOTIFICATIONS}

    ran = [
        line
        for log in logs
        for line in log.splitlines()
        if line.startswith(b"{") and (entry := orjson.loads(line))["event"] == "cron.ran" and entry["name"] == "sweep"
    ]
    assert len(ticks) >= 3, "the sweeper ticked every second while the test ran"
    assert len(ran) == len(ticks) == len(set(ticks)), "each tick's work was done by exactly one worker"


async def wait_healthy(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "an API process did not start"
        await asyncio.sleep(0.1)
