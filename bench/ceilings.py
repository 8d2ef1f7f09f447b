"""What the machine allows before mailroom does anything: a trivial endpoint, PostgreSQL commits, Redis commands,
and arq's own cost per job. Every mailroom figure can then be read as a share of its ceiling."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio

from bench import procs


async def wait_http(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                await client.get(url)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {seconds}s")


async def repeat_for(seconds: float, calls: list[Callable[[], Awaitable[object]]]) -> int:
    """Each call in a loop of its own until the time is up; how many calls completed in all."""
    count = 0
    deadline = time.monotonic() + seconds

    async def loop(call: Callable[[], Awaitable[object]]) -> None:
        nonlocal count
        while time.monotonic() < deadline:
            await call()
            count += 1

    await asyncio.gather(*(loop(call) for call in calls))
    return count


async def trivial_endpoint(seconds: int, concurrency: int, workdir: Path) -> dict[str, Any]:
    port = procs.free_port()
    server = procs.spawn([procs.PYTHON, "-m", "bench.trivial", "--port", str(port)], {}, workdir / "trivial.log")
    try:
        url = f"http://127.0.0.1:{port}/"
        await wait_http(url)
        if shutil.which("wrk"):
            out = subprocess.run(
                ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", url], capture_output=True, text=True, check=True
            ).stdout
            rate = float(out.split("Requests/sec:")[1].split()[0])
            return {"driver": "wrk", "req_per_s": round(rate)}
        async with httpx.AsyncClient() as client:
            count = await repeat_for(seconds, [functools.partial(client.get, url) for _ in range(concurrency)])
        return {"driver": "python", "req_per_s": round(count / seconds)}
    finally:
        procs.stop([server])


async def postgres_commits(database_url: str, seconds: float) -> dict[str, Any]:
    """One-row INSERTs, each its own transaction (a commit each, as a webhook would be without group commit)."""
    setup = await asyncpg.connect(database_url)
    await setup.execute("CREATE TABLE IF NOT EXISTS bench_ceiling (id bigserial PRIMARY KEY, body text)")
    result: dict[str, Any] = {}
    try:
        for clients in (1, 4):
            connections = [await asyncpg.connect(database_url) for _ in range(clients)]
            count = await repeat_for(
                seconds,
                [
                    functools.partial(c.execute, "INSERT INTO bench_ceiling (body) VALUES ($1)", "x" * 200)
                    for c in connections
                ],
            )
            for connection in connections:
                await connection.close()
            result[f"insert_tps_{clients}_client{'s' if clients > 1 else ''}"] = round(count / seconds)
    finally:
        await setup.execute("DROP TABLE bench_ceiling")
        await setup.close()
    return result


async def redis_commands(redis_url: str, seconds: float) -> dict[str, Any]:
    """SET round trips from Python (redis-py), one and four connections: the client's ceiling as much as Redis's."""
    result: dict[str, Any] = {}
    for clients in (1, 4):
        pool = redis.asyncio.Redis.from_url(redis_url, max_connections=clients)
        count = await repeat_for(
            seconds, [functools.partial(pool.set, f"bench:ceiling:{n}", "x") for n in range(clients)]
        )
        await pool.delete(*(f"bench:ceiling:{n}" for n in range(clients)))
        await pool.aclose()
        result[f"set_per_s_{clients}_connection{'s' if clients > 1 else ''}"] = round(count / seconds)
    return result


async def arq_noop_jobs(redis_url: str, jobs: int, workdir: Path) -> dict[str, Any]:
    """arq's own cost: `jobs` no-op jobs through one burst worker process, net of the same worker's empty run
    (start-up and shut-down)."""
    from arq.connections import ArqRedis

    from jobs.enqueue import serialize

    queue = "bench:noop"
    client = ArqRedis.from_url(redis_url)
    client.job_serializer = serialize

    def run_worker() -> tuple[float, float]:
        began = time.perf_counter()
        worker = procs.spawn([procs.PYTHON, "-m", "bench.noop_worker", redis_url, queue], {}, workdir / "noop.log")
        _, _, usage = os.wait4(worker.pid, 0)
        worker.returncode = 0
        return time.perf_counter() - began, usage.ru_utime + usage.ru_stime

    try:
        empty_seconds, empty_cpu = await asyncio.to_thread(run_worker)
        for n in range(jobs):
            await client.enqueue_job("noop", n, _queue_name=queue)
        seconds, cpu = await asyncio.to_thread(run_worker)
    finally:
        await client.aclose()
    net_seconds, net_cpu = max(1e-6, seconds - empty_seconds), max(0.0, cpu - empty_cpu)
    return {
        "jobs": jobs,
        "jobs_per_s": round(jobs / net_seconds),
        "worker_cpu_ms_per_job": round(net_cpu / jobs * 1000, 3),
    }
