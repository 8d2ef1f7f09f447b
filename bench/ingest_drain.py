"""A first benchmark: ingest and drain figures for one API and one worker process, with CPU and memory per process.

    .venv/bin/python bench/ingest_drain.py [--notifications 2000] [--latency 0.05] [--concurrency 50]

Uses MAILROOM_BENCH_DATABASE_URL / MAILROOM_BENCH_REDIS_URL (a database it may drop and create, a Redis database it
may flush), else the embedded servers. Truncated notifications make the worker fetch every message from a fake
Nylas (tests/fake_nylas.py) that answers after --latency seconds. Ingest is driven by wrk when it is installed
(a generated Lua script of pre-signed bodies), else by a Python client. Prints a table and writes bench/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import redis.asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailroom import embedded, migrate  # noqa: E402
from service.signatures import sign  # noqa: E402
from tests.fake_nylas import API_KEY, FakeNylasServer  # noqa: E402

SECRET = "bench-secret"
MAILROOM = str(Path(sys.executable).parent / "mailroom")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pids_named(name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def notification(n: int, run: str) -> bytes:
    payload = {
        "specversion": "1.0",
        "type": "message.created.truncated",
        "source": "/google/emails/realtime",
        "id": f"bench-{run}-{n}",
        "time": int(time.time()),
        "webhook_delivery_attempt": 1,
        "data": {
            "application_id": "bench",
            "object": {"object": "message", "id": f"m{n}", "grant_id": f"grant_{n % 20}", "subject": "s", "date": 1},
        },
    }
    return orjson.dumps(payload)


async def drive_python(url: str, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    failures = 0
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=concurrency), timeout=30) as client:

        async def one(body: bytes) -> None:
            nonlocal failures
            async with gate:
                began = time.perf_counter()
                response = await client.post(
                    "/webhooks/nylas", content=body, headers={"x-nylas-signature": sign(SECRET, body)}
                )
                latencies.append(time.perf_counter() - began)
                failures += response.status_code != 200

        began = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "driver": "python",
        "requests": len(bodies),
        "req_per_s": len(bodies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "non_2xx": failures,
    }


def drive_wrk(url: str, bodies: list[bytes], concurrency: int, seconds: int) -> dict[str, Any]:
    """wrk sends each pre-signed body once, then stops sending (duplicates would measure the cheaper path)."""
    lines = ["local bodies = {}", "local sigs = {}"]
    for n, body in enumerate(bodies, 1):
        lines.append(f"bodies[{n}] = {json.dumps(body.decode())}")
        lines.append(f'sigs[{n}] = "{sign(SECRET, body)}"')
    lines.append(
        f"""
local next_index = 0
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) next_index = tonumber(wrk.thread:get("offset") or 0) end
request = function()
  next_index = next_index + 1
  local i = ((next_index - 1) % {len(bodies)}) + 1
  return wrk.format("POST", "/webhooks/nylas",
    {{["Content-Type"]="application/json", ["x-nylas-signature"]=sigs[i]}}, bodies[i])
end
"""
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines))
    result = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", script.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        match = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", result)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", result)
    return {
        "driver": "wrk",
        "requests": int(re.search(r"(\d+) requests in", result).group(1)),  # type: ignore[union-attr]
        "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", result).group(1)),  # type: ignore[union-attr]
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }


def profiler(directory: Path | None, name: str, pid: int) -> subprocess.Popen[bytes] | None:
    if directory is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    command = [shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--rate", "250", "--gil", "--format", "raw", "-o", str(directory / name)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


async def wait_http(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the API did not start")


async def count(database_url: str, query: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return int(await connection.fetchval(query))
    finally:
        await connection.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.05, help="fake Nylas answer time, seconds")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--worker-concurrency", type=int, default=100)
    parser.add_argument("--profile", type=Path, help="record py-spy profiles (collapsed stacks) of the API and worker here")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="mailroom-bench-"))
    servers = embedded.start(
        data,
        postgres="MAILROOM_BENCH_DATABASE_URL" not in os.environ,
        redis="MAILROOM_BENCH_REDIS_URL" not in os.environ,
    )
    admin_url = os.environ.get("MAILROOM_BENCH_DATABASE_URL") or servers.database_url
    redis_url = os.environ.get("MAILROOM_BENCH_REDIS_URL") or servers.redis_url
    assert admin_url and redis_url
    database_url = (
        admin_url.rsplit("/", 1)[0] + "/mailroom_bench" + ("?" + admin_url.split("?", 1)[1] if "?" in admin_url else "")
    )
    admin = await asyncpg.connect(admin_url)
    await admin.execute("DROP DATABASE IF EXISTS mailroom_bench WITH (FORCE)")
    await admin.execute("CREATE DATABASE mailroom_bench")
    await admin.close()
    await asyncio.to_thread(migrate.upgrade, database_url)

    fake = FakeNylasServer().start()
    fake.fake.latency = args.latency
    run = str(int(time.time()))
    for n in range(args.notifications):
        fake.fake.add_message(
            {
                "object": "message",
                "id": f"m{n}",
                "grant_id": f"grant_{n % 20}",
                "subject": "s",
                "from": [{"email": "a@b.c"}],
                "date": 1,
                "body": "<p>x</p>",
                "folders": ["INBOX"],
            }
        )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")} | {
        "MAILROOM_DATABASE_URL": database_url,
        "MAILROOM_REDIS_URL": redis_url,
        "MAILROOM_PORT": str(port),
        "MAILROOM_WEBHOOK_SECRETS": SECRET,
        "MAILROOM_NYLAS_API_URI": fake.url,
        "MAILROOM_NYLAS_API_KEY": API_KEY,
        "MAILROOM_ACTIONS_DRY_RUN": "true",
        "MAILROOM_LOG_LEVEL": "WARNING",
        "MAILROOM_LOG_FORMAT": "json",
        "MAILROOM_WORKER_CONCURRENCY": str(args.worker_concurrency),
        "MAILROOM_NYLAS_RATE_PER_GRANT": "200",
        "MAILROOM_DB_POOL_SIZE": "20",
    }
    flushed = redis.asyncio.Redis.from_url(redis_url)
    await flushed.flushdb()
    await flushed.aclose()
    api = subprocess.Popen([MAILROOM, "api"], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count()},
        "notifications": args.notifications,
        "nylas_latency_s": args.latency,
    }
    try:
        await wait_http(url)
        store_pids = pids_named("postgres") + pids_named("redis-server")
        bodies = [notification(n, run) for n in range(args.notifications)]
        cpu_before = {"api": cpu_seconds(api.pid), "stores": sum(cpu_seconds(p) for p in store_pids)}
        spy = profiler(args.profile, "api", api.pid)
        if shutil.which("wrk"):
            seconds = max(2, int(args.notifications / 400))
            results["ingest"] = await asyncio.to_thread(drive_wrk, url, bodies, args.concurrency, seconds)
        else:
            results["ingest"] = await drive_python(url, bodies, args.concurrency)
        stored = await count(database_url, "SELECT count(*) FROM webhook_events")
        stop_profiler(spy)
        results["ingest"]["stored"] = stored
        results["ingest"]["api_rss_mb"] = rss_mb(api.pid)

        worker = subprocess.Popen([MAILROOM, "worker"], env=env, stderr=subprocess.DEVNULL)
        spy = profiler(args.profile, "worker", worker.pid)
        try:
            began = time.monotonic()
            while (
                done := await count(database_url, "SELECT count(*) FROM webhook_events WHERE status = 'processed'")
            ) < stored:
                if time.monotonic() - began > 600:
                    break
                await asyncio.sleep(0.2)
            elapsed = time.monotonic() - began
            stop_profiler(spy)
            results["drain"] = {
                "emails": done,
                "seconds": round(elapsed, 2),
                "emails_per_s": round(done / elapsed, 1),
                "worker_rss_mb": round(rss_mb(worker.pid), 1),
            }
            cpu = {
                "api": cpu_seconds(api.pid) - cpu_before["api"],
                "worker": cpu_seconds(worker.pid),
                "postgres_and_redis": sum(cpu_seconds(p) for p in store_pids if Path(f"/proc/{p}").exists())
                - cpu_before["stores"],
            }
            results["cpu_seconds"] = {k: round(v, 2) for k, v in cpu.items()}
            results["cpu_ms_per_email"] = round(sum(cpu.values()) / max(1, done) * 1000, 2)
        finally:
            worker.terminate()
            worker.wait(30)
    finally:
        api.terminate()
        api.wait(30)
        fake.stop()
        servers.close()

    ingest, drain = results["ingest"], results["drain"]
    print(
        f"ingest ({ingest['driver']}, c={args.concurrency}): {ingest['req_per_s']:.0f} req/s, "
        f"p50 {ingest['p50_ms']:.1f} ms, p99 {ingest['p99_ms']:.1f} ms, non-2xx {ingest['non_2xx']}, "
        f"stored {ingest['stored']}, API RSS {ingest['api_rss_mb']:.0f} MB"
    )
    print(
        f"drain (1 worker, Nylas {args.latency * 1000:.0f} ms): {drain['emails_per_s']} emails/s "
        f"({drain['emails']} in {drain['seconds']} s), worker RSS {drain['worker_rss_mb']} MB"
    )
    print(
        f"CPU per email, API + worker + PostgreSQL + Redis: {results['cpu_ms_per_email']} ms {results['cpu_seconds']}"
    )
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
