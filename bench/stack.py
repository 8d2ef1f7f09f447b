"""The stack under test: a fresh database, a flushed Redis database, a fake Nylas process, API and worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import redis.asyncio

from bench import procs
from bench.ceilings import wait_http
from bench.drivers import SECRET
from core import migrate
from mailroom.fake_nylas import API_KEY

# Per invocation: a process left over from an interrupted run can never take this run's work.
DATABASE = f"mailroom_bench_{os.getpid()}"
QUEUE = f"mailroom:bench:{os.getpid()}"


def database_url_for(admin_url: str, name: str = DATABASE) -> str:
    base, _, query = admin_url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + ("?" + query if query else "")


@dataclass
class Stack:
    admin_url: str
    redis_url: str
    workdir: Path
    latency: float
    failure_rate: float
    worker_concurrency: int
    # Worker settings a run asks for (MAILROOM_* variables of the bench's own environment are not passed on).
    worker_env: dict[str, str] = field(default_factory=dict)
    database_url: str = ""
    fake_url: str = ""
    fake: subprocess.Popen[bytes] | None = None
    apis: list[subprocess.Popen[bytes]] = field(default_factory=list)
    api_urls: list[str] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    async def reset(self) -> None:
        """A new empty, migrated database and an empty Redis database."""
        self.database_url = database_url_for(self.admin_url)
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            await admin.close()
        await asyncio.to_thread(migrate.upgrade, self.database_url)
        client = redis.asyncio.Redis.from_url(self.redis_url)
        await client.flushdb()
        await client.aclose()

    def env(self, port: int = 0) -> dict[str, str]:
        return (
            {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
            | {
                "MAILROOM_DATABASE_URL": self.database_url,
                "MAILROOM_REDIS_URL": self.redis_url,
                "MAILROOM_PORT": str(port),
                "MAILROOM_WEBHOOK_SECRETS": SECRET,
                "MAILROOM_NYLAS_API_URI": self.fake_url,
                "MAILROOM_NYLAS_API_KEY": API_KEY,
                "MAILROOM_ACTIONS_DRY_RUN": "true",
                "MAILROOM_LOG_LEVEL": "WARNING",
                "MAILROOM_LOG_FORMAT": "json",
                "MAILROOM_WORKER_CONCURRENCY": str(self.worker_concurrency),
                "MAILROOM_NYLAS_RATE_PER_GRANT": "1000",
                "MAILROOM_DB_POOL_SIZE": "20",
                "MAILROOM_QUEUE_NAME": QUEUE,
            }
            | self.worker_env
        )

    async def start_fake_nylas(self) -> None:
        port = procs.free_port()
        command = [procs.PYTHON, "-m", "mailroom.fake_nylas", "--port", str(port), "--latency", str(self.latency)]
        command += ["--failure-rate", str(self.failure_rate)]
        self.fake = procs.spawn(command, {**os.environ}, self.workdir / "fake_nylas.log")
        self.fake_url = f"http://127.0.0.1:{port}"
        await wait_http(f"{self.fake_url}/v3/grants/none")

    async def start_apis(self, count: int) -> None:
        for _ in range(count):
            port = procs.free_port()
            self.apis.append(procs.spawn([procs.MAILROOM, "api"], self.env(port), self.workdir / "api.log"))
            self.api_urls.append(f"http://127.0.0.1:{port}")
        for url in self.api_urls:
            await wait_http(f"{url}/healthz")

    async def start_workers(self, count: int) -> None:
        """Start them and wait until each has sent its first heartbeat (it takes jobs from then on)."""
        for _ in range(count):
            self.workers.append(procs.spawn([procs.MAILROOM, "worker"], self.env(), self.workdir / "worker.log"))
        client = redis.asyncio.Redis.from_url(self.redis_url)
        try:
            deadline = time.monotonic() + 60
            while int(await client.zcard(f"{QUEUE}:workers")) < count:
                if time.monotonic() > deadline:
                    raise RuntimeError("the workers did not start within 60 s")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def stop_apis(self) -> None:
        procs.stop(self.apis)
        self.apis, self.api_urls = [], []

    def stop_workers(self) -> None:
        procs.stop(self.workers)
        self.workers = []

    def close(self) -> None:
        self.stop_workers()
        self.stop_apis()
        if self.fake is not None:
            procs.stop([self.fake])

    async def drop(self) -> None:
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        finally:
            await admin.close()

    def groups(self, store_names: tuple[str, ...]) -> list[procs.Group]:
        return [
            procs.Group("api", [p.pid for p in self.apis]),
            procs.Group("worker", [p.pid for p in self.workers]),
            procs.Group("fake_nylas", [self.fake.pid] if self.fake else []),
            procs.Group("postgres_redis", comm=store_names),
        ]


async def count(database_url: str, query: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return int(await connection.fetchval(query))
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def connection(database_url: str):  # type: ignore[no-untyped-def]
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def wait_for(predicate_query: str, database_url: str, target: int, seconds: float) -> float:
    """Seconds until the query's count reaches `target` (polled every 50 ms), or raise after `seconds`."""
    began = time.monotonic()
    async with connection(database_url) as conn:
        while int(await conn.fetchval(predicate_query)) < target:
            if time.monotonic() - began > seconds:
                raise TimeoutError(f"{predicate_query!r} did not reach {target} within {seconds}s")
            await asyncio.sleep(0.05)
    return time.monotonic() - began
