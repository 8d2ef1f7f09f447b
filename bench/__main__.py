"""The benchmark: `python -m bench` (see README, Performance).

Starts its own stack (the embedded PostgreSQL and Redis, or MAILROOM_BENCH_DATABASE_URL / MAILROOM_BENCH_REDIS_URL:
a server where it may create and drop the database `mailroom_bench`, and a Redis database it may flush), a fake
Nylas in a process of its own answering after --latency seconds, and the API and worker processes. Then, per run:

1. ingest: --ingest-notifications distinct signed webhooks at --concurrency into the API processes, no worker
   (wrk with a generated Lua script when installed, else a Python client);
2. drain: --drain-notifications stored, then the worker processes start; time until every email is stored, and until
   every email's chain (classify, act) is done, with queue depth and throughput sampled over time;
3. steady: --rate notifications a second for --steady-seconds with the workers running; freshness (webhook sent ->
   email stored) and memory over time.

CPU per email sums every process: API, worker, fake Nylas, PostgreSQL and Redis. Ceilings (a trivial endpoint,
PostgreSQL commits, Redis commands, arq no-op jobs) are measured first, on the same machine in the same run.
Prints a table, writes results.json and PNG plots to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio
import uvloop

from bench import ceilings, drivers, procs
from bench.stack import QUEUE, Stack, wait_for
from bench.table import print_table
from mailroom import embedded

ROOT = Path(__file__).resolve().parent.parent
STORED = "SELECT count(*) FROM emails"
DONE = "SELECT count(*) FROM emails WHERE pipeline_state = 'done'"
WAITING = "SELECT count(*) FROM webhook_events WHERE status IN ('received', 'queued')"
# The drain's span as the database saw it: from the first claim (a stage run's start) to the last email stored, so
# neither the worker's start-up nor the 250 ms sampling enters the rate.
SPAN = (
    "SELECT extract(epoch FROM (SELECT max(created_at) FROM emails) - (SELECT min(started_at) FROM stage_runs)), "
    "extract(epoch FROM (SELECT max(pipeline_updated_at) FROM emails) - (SELECT min(started_at) FROM stage_runs))"
)
# Ours: what a user runs and pays for. The fake Nylas and the load driver are reported on their own lines.
OURS = ("api", "worker", "postgres_redis")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="repeat ingest, drain and steady; medians are reported")
    parser.add_argument("--ingest-notifications", type=int, default=20000)
    parser.add_argument("--drain-notifications", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50, help="ingest clients (wrk connections)")
    parser.add_argument("--apis", type=int, default=1, help="API processes")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--worker-concurrency", type=int, default=200, help="MAILROOM_WORKER_CONCURRENCY")
    parser.add_argument(
        "--fetch", choices=("http", "sdk"), default="http", help="MAILROOM_NYLAS_FETCH: how the batch worker fetches"
    )
    parser.add_argument("--worker-batches", type=int, default=16, help="MAILROOM_WORKER_BATCHES")
    parser.add_argument(
        "--per-event", action="store_true", help="MAILROOM_BATCH_WORKER=false: one job per event, as before batches"
    )
    parser.add_argument("--latency", type=float, default=0.05, help="fake Nylas answer time, seconds")
    parser.add_argument("--failure-rate", type=float, default=0.0, help="share of Nylas calls answered 503")
    parser.add_argument("--rate", type=float, default=200, help="steady phase: notifications a second")
    parser.add_argument(
        "--ingest-rate", type=float, default=1000, help="fixed-rate ingest phase: webhooks a second (open loop)"
    )
    parser.add_argument("--ingest-rate-seconds", type=float, default=10, help="fixed-rate ingest phase: duration")
    parser.add_argument("--steady-seconds", type=float, default=20)
    parser.add_argument("--ceiling-seconds", type=float, default=3)
    parser.add_argument("--python-driver", action="store_true", help="drive ingest with Python even if wrk is here")
    parser.add_argument("--profile", type=Path, help="record py-spy profiles (collapsed stacks) of API and worker")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--small", action="store_true", help="a quick run for CI: small counts, one run")
    args = parser.parse_args()
    if args.small:
        args.runs, args.ingest_notifications, args.drain_notifications = 1, 2000, 300
        args.steady_seconds, args.rate, args.ceiling_seconds = 3, 50, 1
        args.ingest_rate, args.ingest_rate_seconds = 200, 2
    return args


async def ingest_phase(stack: Stack, args: argparse.Namespace, run: str, meter: procs.CpuMeter) -> dict[str, Any]:
    bodies = [drivers.notification(n, run) for n in range(args.ingest_notifications)]
    await stack.start_apis(args.apis)
    spies = procs.profiler(args.profile, "api", [p.pid for p in stack.apis])
    meter.groups = stack.groups(meter.groups[-1].comm)
    meter.start()
    try:
        shares = [bodies[i :: len(stack.api_urls)] for i in range(len(stack.api_urls))]
        per_api = max(1, args.concurrency // len(stack.api_urls))
        if shutil.which("wrk") and not args.python_driver:
            results = await asyncio.gather(
                *(
                    asyncio.to_thread(drivers.wrk, url, share, per_api, stack.workdir)
                    for url, share in zip(stack.api_urls, shares, strict=True)
                )
            )
        else:
            results = await asyncio.gather(
                *(drivers.closed_loop(url, share, per_api) for url, share in zip(stack.api_urls, shares, strict=True))
            )
        cpu = meter.stop()
        procs.stop_profilers(spies)
        rss = sum(procs.rss_mb(p.pid) for p in stack.apis)
    finally:
        stack.stop_apis()
    stored = await _count(stack.database_url, "SELECT count(*) FROM webhook_events")
    first = results[0]
    latencies = sorted(x for r in results for x in r.latencies_ms)
    return {
        "driver": first.driver,
        "requests": sum(r.requests for r in results),
        "req_per_s": round(sum(r.req_per_s for r in results)),
        "p50_ms": round(max(r.p50_ms for r in results), 2),
        "p99_ms": round(max(r.p99_ms for r in results), 2),
        "non_2xx": sum(r.non_2xx for r in results),
        "stored": stored,
        "api_rss_mb": round(rss, 1),
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "cpu_ms_per_notification": round(sum(cpu[k] for k in OURS) / max(1, stored) * 1000, 3),
        "latencies_ms": latencies,
    }


async def drain_phase(stack: Stack, args: argparse.Namespace, run: str, meter: procs.CpuMeter) -> dict[str, Any]:
    n = args.drain_notifications
    bodies = [drivers.notification(i, f"{run}d") for i in range(n)]
    await stack.start_apis(1)
    await drivers.closed_loop(stack.api_urls[0], bodies, args.concurrency)
    stack.stop_apis()
    await stack.start_workers(args.workers)
    spies = procs.profiler(args.profile, "worker", [p.pid for p in stack.workers])
    meter.groups = stack.groups(meter.groups[-1].comm)
    meter.start()
    began = time.monotonic()
    samples: list[dict[str, float]] = []
    queue = redis.asyncio.Redis.from_url(stack.redis_url)
    stored_at = done_at = None
    conn = await asyncpg.connect(stack.database_url)
    try:
        while done_at is None:
            if time.monotonic() - began > 900:
                raise TimeoutError("the drain did not finish within 15 minutes")
            stored = int(await conn.fetchval(STORED))
            done = int(await conn.fetchval(DONE))
            now = time.monotonic() - began
            waiting = int(await queue.zcard(QUEUE)) + int(await conn.fetchval(WAITING))
            samples.append({"t": now, "stored": stored, "done": done, "queued": waiting})
            if stored_at is None and stored >= n:
                stored_at = now
            if done >= n:
                done_at = now
            await asyncio.sleep(0.25)
        cpu = meter.stop()
        procs.stop_profilers(spies)
        rss = sum(procs.rss_mb(p.pid) for p in stack.workers)
        stored_span, done_span = (float(v) for v in await conn.fetchrow(SPAN))
    finally:
        await conn.close()
        await queue.aclose()
        stack.stop_workers()
    assert stored_at is not None
    return {
        "emails": n,
        "seconds_to_stored": round(stored_span, 3),
        "emails_stored_per_s": round(n / stored_span, 1),
        "seconds_to_done": round(done_span, 3),
        "emails_done_per_s": round(n / done_span, 1),
        "polled_seconds_to_done": round(done_at, 2),
        "worker_rss_mb": round(rss, 1),
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "cpu_ms_per_email": round(sum(cpu[k] for k in OURS) / n * 1000, 3),
        "fake_nylas_cpu_ms_per_email": round(cpu["fake_nylas"] / n * 1000, 3),
        "samples": samples,
    }


async def fixed_rate_phase(stack: Stack, args: argparse.Namespace, run: str) -> dict[str, Any]:
    """Webhooks at a fixed rate, open loop (sent on time whatever the answers do, as Nylas sends), no worker. The
    API process is pinned to core 0 and this load generator to core 1, so the two never share a core (PostgreSQL
    and Redis may run on either)."""
    n = int(args.ingest_rate * args.ingest_rate_seconds)
    bodies = [drivers.notification(i, f"{run}f") for i in range(n)]
    await stack.start_apis(1)
    cores = sorted(os.sched_getaffinity(0))
    mine = set(cores)
    pinned = len(cores) >= 2
    try:
        if pinned:
            os.sched_setaffinity(stack.apis[0].pid, {cores[0]})
            os.sched_setaffinity(0, {cores[1]})
        ingest, _ = await drivers.open_loop(stack.api_urls[0], bodies, args.ingest_rate)
    finally:
        if pinned:
            os.sched_setaffinity(0, mine)
        stack.stop_apis()
    return {
        "rate": args.ingest_rate,
        "requests": ingest.requests,
        "achieved_rate": round(ingest.req_per_s, 1),
        "pinned": pinned,
        "p50_ms": round(ingest.p50_ms, 2),
        "p99_ms": round(ingest.p99_ms, 2),
        "p999_ms": round(ingest.p999_ms, 2),
        "non_2xx": ingest.non_2xx,
    }


async def steady_phase(stack: Stack, args: argparse.Namespace, run: str) -> dict[str, Any]:
    n = int(args.rate * args.steady_seconds)
    bodies = [drivers.notification(i, f"{run}s") for i in range(n)]
    await stack.start_apis(1)
    await stack.start_workers(args.workers)
    memory: list[dict[str, float]] = []
    began = time.monotonic()

    async def watch_memory() -> None:
        while True:
            memory.append(
                {
                    "t": time.monotonic() - began,
                    "api_mb": sum(procs.rss_mb(p.pid) for p in stack.apis),
                    "worker_mb": sum(procs.rss_mb(p.pid) for p in stack.workers),
                }
            )
            await asyncio.sleep(1)

    watcher = asyncio.create_task(watch_memory())
    try:
        ingest, sent_at = await drivers.open_loop(stack.api_urls[0], bodies, args.rate)
        # A backlog (a rate above the workers' capacity) drains at their pace: allow for 10 emails a second.
        stored = f"SELECT count(*) FROM emails WHERE message_id LIKE '{run}s-%'"
        # What was acknowledged (a request the driver saw fail was never promised): a 10-minute run had one timeout.
        await wait_for(stored, stack.database_url, n - ingest.non_2xx, max(120.0, n / 10))
    finally:
        watcher.cancel()
        stack.stop_workers()
        stack.stop_apis()
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch(
            "SELECT e.notification_id, extract(epoch FROM m.created_at) AS stored,"
            " extract(epoch FROM e.received_at) AS received,"
            " (SELECT extract(epoch FROM min(r.started_at)) FROM stage_runs r"
            "  WHERE r.event_id = e.id AND r.stage = 'process') AS claimed"
            " FROM webhook_events e JOIN emails m ON m.grant_id = e.grant_id AND m.message_id = e.object_id"
            " WHERE e.notification_id LIKE $1",
            f"bench-{run}s-%",
        )
    finally:
        await conn.close()
    freshness = sorted((float(r["stored"]) - sent_at[r["notification_id"]]) * 1000 for r in rows)

    def part(start: str | None, end: str) -> float:
        """The median of one leg (ms): sent -> stored in the API's transaction -> claimed -> email stored."""
        legs = sorted(
            (float(r[end]) - (float(r[start]) if start else sent_at[r["notification_id"]])) * 1000
            for r in rows
            if r[end] is not None and (start is None or r[start] is not None)
        )
        return round(drivers.percentile(legs, 0.5), 1)

    legs = {
        "sent_to_received_ms": part(None, "received"),
        "received_to_claimed_ms": part("received", "claimed"),
        "claimed_to_stored_ms": part("claimed", "stored"),
    }
    return {
        "rate": args.rate,
        "notifications": n,
        "achieved_rate": round(ingest.req_per_s, 1),
        "non_2xx": ingest.non_2xx,
        "ingest_p50_ms": round(ingest.p50_ms, 2),
        "ingest_p99_ms": round(ingest.p99_ms, 2),
        "freshness_p50_ms": round(drivers.percentile(freshness, 0.5), 1),
        "freshness_p99_ms": round(drivers.percentile(freshness, 0.99), 1),
        "freshness_max_ms": round(freshness[-1], 1) if freshness else None,
        "freshness_legs_p50": legs,
        "api_rss_mb_max": round(max((m["api_mb"] for m in memory), default=0), 1),
        "worker_rss_mb_max": round(max((m["worker_mb"] for m in memory), default=0), 1),
        "freshness_ms": freshness,
        "memory": memory,
    }


async def _count(database_url: str, query: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


def median(runs: list[dict[str, Any]], *path: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values.append(float(value))
    return round(statistics.median(values), 3)


async def main() -> int:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="mailroom-bench-"))
    servers = embedded.start(
        workdir / "servers",
        postgres="MAILROOM_BENCH_DATABASE_URL" not in os.environ,
        redis="MAILROOM_BENCH_REDIS_URL" not in os.environ,
    )
    admin_url = os.environ.get("MAILROOM_BENCH_DATABASE_URL") or servers.database_url
    redis_url = os.environ.get("MAILROOM_BENCH_REDIS_URL") or servers.redis_url
    assert admin_url and redis_url
    worker_env = {
        "MAILROOM_NYLAS_FETCH": args.fetch,
        "MAILROOM_WORKER_BATCHES": str(args.worker_batches),
        "MAILROOM_BATCH_WORKER": "false" if args.per_event else "true",
    }
    stack = Stack(
        admin_url, redis_url, workdir, args.latency, args.failure_rate, args.worker_concurrency, worker_env=worker_env
    )
    store_names = ("postgres", "redis-server")
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    try:
        await stack.reset()
        print("ceilings ...", flush=True)
        results["ceilings"] = {
            "trivial_endpoint": await ceilings.trivial_endpoint(int(args.ceiling_seconds), args.concurrency, workdir),
            "postgres": await ceilings.postgres_commits(stack.database_url, args.ceiling_seconds),
            "redis": await ceilings.redis_commands(redis_url, args.ceiling_seconds),
            "arq": await ceilings.arq_noop_jobs(redis_url, 500 if args.small else 5000, workdir),
        }
        await stack.start_fake_nylas()
        runs = []
        for number in range(args.runs):
            tag = f"{int(time.time())}r{number}"
            meter = procs.CpuMeter(stack.groups(store_names))
            await stack.reset()
            print(f"run {number + 1}/{args.runs}: ingest ...", flush=True)
            ingest = await ingest_phase(stack, args, tag, meter)
            print(f"run {number + 1}/{args.runs}: drain ...", flush=True)
            await stack.reset()  # the ingest phase's events are not the drain's work
            drain = await drain_phase(stack, args, tag, meter)
            print(f"run {number + 1}/{args.runs}: steady ...", flush=True)
            await stack.reset()
            steady = await steady_phase(stack, args, tag)
            print(f"run {number + 1}/{args.runs}: ingest at a fixed rate ...", flush=True)
            await stack.reset()
            fixed = await fixed_rate_phase(stack, args, tag)
            runs.append({"ingest": ingest, "drain": drain, "steady": steady, "fixed_rate": fixed})
    finally:
        stack.close()
        await stack.drop()
        servers.close()
    results["runs"] = [
        {
            phase: {k: v for k, v in figures.items() if k not in ("latencies_ms", "samples", "freshness_ms", "memory")}
            for phase, figures in run.items()
        }
        for run in runs
    ]
    results["median"] = {
        "ingest_req_per_s": median(runs, "ingest", "req_per_s"),
        "ingest_p50_ms": median(runs, "ingest", "p50_ms"),
        "ingest_p99_ms": median(runs, "ingest", "p99_ms"),
        "ingest_non_2xx": median(runs, "ingest", "non_2xx"),
        "drain_emails_stored_per_s": median(runs, "drain", "emails_stored_per_s"),
        "drain_emails_done_per_s": median(runs, "drain", "emails_done_per_s"),
        "cpu_ms_per_email": round(
            median(runs, "ingest", "cpu_ms_per_notification") + median(runs, "drain", "cpu_ms_per_email"), 3
        ),
        "cpu_ms_per_email_ingest": median(runs, "ingest", "cpu_ms_per_notification"),
        "cpu_ms_per_email_drain": median(runs, "drain", "cpu_ms_per_email"),
        "fake_nylas_cpu_ms_per_email": median(runs, "drain", "fake_nylas_cpu_ms_per_email"),
        "fixed_rate_p50_ms": median(runs, "fixed_rate", "p50_ms"),
        "fixed_rate_p99_ms": median(runs, "fixed_rate", "p99_ms"),
        "fixed_rate_achieved": median(runs, "fixed_rate", "achieved_rate"),
        "freshness_p50_ms": median(runs, "steady", "freshness_p50_ms"),
        "freshness_p99_ms": median(runs, "steady", "freshness_p99_ms"),
        "api_rss_mb": median(runs, "steady", "api_rss_mb_max"),
        "worker_rss_mb": median(runs, "steady", "worker_rss_mb_max"),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print_table(results, args)
    try:
        from bench import plots
    except ImportError:
        print("(no plots: pip install -e '.[bench]' for matplotlib)")
    else:
        for path in plots.draw(runs[-1], results, args.out):
            print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        sys.exit(runner.run(main()))
