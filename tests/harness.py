"""The parts a test runs: its servers, its settings, the API behind a real server, a worker draining the queue,
and polling with a deadline. The fixtures that build them are in conftest.py."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import uvicorn
from arq.cron import cron
from asgi_lifespan import LifespanManager
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from db.models import CronRun
from jobs.cron import sweep_cron
from jobs.worker import close_worker, create_worker
from mailroom.fake_nylas import API_KEY
from service.app import create_app
from tests import notifications


@dataclass(frozen=True)
class Servers:
    database_url: str  # the server's maintenance database; tests create their own next to it
    redis_url: str


def redis_url_for_this_process(url: str) -> str:
    """Under pytest-xdist each test process flushes its own Redis database: gw0 keeps the configured one, gw1 the one
    below it, and so on (the Redis URL's path is the database number)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    offset = int(worker.removeprefix("gw") or 0)
    if offset == 0:
        return url
    base, _, number = url.rpartition("/")
    if not number.isdigit():
        base, number = url.rstrip("/"), "0"
    return f"{base}/{(int(number) - offset) % 16}"


def plain_url(url: str) -> str:
    """asyncpg wants `postgresql://`, without SQLAlchemy's `+driver`."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def execute_on(url: str, *statements: str) -> None:
    connection = await asyncpg.connect(plain_url(url))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_secrets": notifications.SECRET,
        "nylas_api_key": API_KEY,
        "nylas_timeout": 5,
        "queue_name": "mailroom:test",
        "test_task_sleep": 0,
        "worker_poll_delay": 0.01,
        "retry_base_delay": 0.01,
        "retry_max_delay": 0.05,
        "job_max_tries": 3,
        "redis_timeout": 1,
        "db_connect_timeout": 2,
        # The history sampler writes on the wall clock's 10 s marks; tests of it turn it on, the rest stay still.
        "history_seconds": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@asynccontextmanager
async def api_in_process(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app, its lifespan run, with a client that calls it in this process (no server, no socket): for
    tests of what the app does. Tests of the server itself (timeouts, slow clients, the protocol) use running_api."""
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://mailroom.test", timeout=15) as client:
            yield client


@asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app behind a real uvicorn on a free port, with a client pointed at it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_config=None, access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await poll_until(lambda: server.started, what="the API to start")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
            yield client
    finally:
        server.should_exit = True
        await task
        sock.close()


async def drain(settings: Settings, **overrides: Any) -> None:
    """Run a real arq worker in this process until the queue (deferred retries included) is empty."""
    # No cron unless a test asks: a minute boundary during a test must not change what it sees.
    options: dict[str, Any] = {"burst": True, "handle_signals": False, "poll_delay": 0.01, "cron_jobs": []}
    options.update(overrides)
    worker = create_worker(settings, **options)
    try:
        await worker.async_run()
    finally:
        await close_worker(worker)


async def poll_until(predicate: Callable[[], object], *, what: str, within: float = 10.0) -> None:
    """Wait for a condition with a deadline: tests never sleep and hope. The predicate may be a coroutine function."""
    deadline = time.monotonic() + within
    while True:
        found = predicate()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass(frozen=True)
class CronTicks:
    runs: list[CronRun]  # in tick order
    jobs_completed: int  # by both workers together
    elapsed: float


async def sweep_ticking_on_two_workers(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], *, ticks: int, within: float
) -> CronTicks:
    """Two workers with the sweeper scheduled every second, until `ticks` ticks are recorded (or fail the test)."""
    every_second = [cron(sweep_cron, name="cron:sweep", second=set(range(60)), run_at_startup=False)]
    workers = [create_worker(settings, handle_signals=False, cron_jobs=every_second, poll_delay=0.05) for _ in "ab"]
    tasks = [asyncio.create_task(w.async_run()) for w in workers]
    started = time.time()

    async def recorded() -> list[CronRun]:
        async with sessionmaker() as session:
            return list((await session.execute(select(CronRun).order_by(CronRun.tick_at))).scalars())

    try:
        deadline = time.monotonic() + within
        while len(runs := await recorded()) < ticks:
            assert time.monotonic() < deadline, f"only {len(runs)} ticks in {within} s"
            await asyncio.sleep(0.1)
    finally:
        for worker in workers:
            await close_worker(worker)
        await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.time() - started
    return CronTicks(await recorded(), sum(w.jobs_complete for w in workers), elapsed)
