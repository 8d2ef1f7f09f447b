"""`mailroom inspect`, `mailroom purge` and `mailroom stats`: the queue seen from a terminal, no redis-cli needed."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from arq.connections import ArqRedis
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import emails, webhook_events
from db.engine import create_engine, create_sessionmaker
from db.uow import unit_of_work
from jobs.enqueue import open_queue
from jobs.heartbeat import live_workers
from jobs.inspect import database_counts, queued_jobs, redis_depth
from mailroom.settings import Settings


@asynccontextmanager
async def connections(
    settings: Settings, name: str
) -> AsyncIterator[tuple[ArqRedis, async_sessionmaker[AsyncSession]]]:
    """A queue client and a small database pool for one operator command."""
    assert settings.redis_url is not None and settings.database_url is not None
    queue = open_queue(settings.redis_url, timeout=settings.redis_timeout, queue_name=settings.queue_name)
    engine = create_engine(settings.database_url, pool_size=1, application_name=f"mailroom-{name}")
    try:
        yield queue, create_sessionmaker(engine)
    finally:
        await queue.aclose()
        await engine.dispose()


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=["active", "scheduled", "queued", "workers", "dead"])
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    parser.add_argument("--limit", type=int, default=100)


def add_purge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--yes", action="store_true", help="do not ask")


def add_stats_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="JSON instead of tables")


def _show(out: Console, rows: list[dict[str, Any]], *, as_json: bool, title: str) -> None:
    if as_json:
        out.print(orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2).decode(), markup=False)
        return
    table = Table(title=f"{title} ({len(rows)})")
    columns = list(rows[0]) if rows else ["(none)"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    out.print(table)


def _cell(value: object) -> str:
    if isinstance(value, float) and value > 1e9:
        return datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


async def run_inspect(settings: Settings, args: argparse.Namespace, out: Console) -> int:
    async with connections(settings, "inspect") as (queue, sessionmaker):
        rows: list[dict[str, Any]]
        if args.what in ("queued", "scheduled"):
            rows = await queued_jobs(queue, settings.queue_name, scheduled=args.what == "scheduled", limit=args.limit)
        elif args.what in ("active", "workers"):
            workers = await live_workers(queue, settings.queue_name)
            if args.what == "workers":
                rows = [
                    {
                        "worker": w["name"],
                        "concurrency": w["concurrency"],
                        "running": len(w["jobs"]),
                        "since": w["started_at"],
                    }
                    for w in workers
                ]
            else:
                rows = [
                    {"job_id": j["job_id"], "worker": w["name"], "started_at": j["started_at"]}
                    for w in workers
                    for j in w["jobs"]
                ]
        else:
            async with sessionmaker() as session:
                events = await webhook_events.dead(session, limit=args.limit)
                dead_emails = await emails.dead(session, limit=args.limit)
                rows = [
                    {"stage": "process", "id": f"event {e.id}", "grant": e.grant_id, "error": e.last_error}
                    for e in events
                ] + [
                    {"stage": m.pipeline_state, "id": f"email {m.id}", "grant": m.grant_id, "error": m.last_error}
                    for m in dead_emails
                ]
        _show(out, rows, as_json=args.json, title=args.what)
    return 0


async def run_stats(settings: Settings, args: argparse.Namespace, out: Console) -> int:
    async with connections(settings, "stats") as (queue, sessionmaker):
        depth = await redis_depth(queue, settings.queue_name)
        async with sessionmaker() as session:
            counts = await database_counts(session)
    if args.json:
        out.print(orjson.dumps({"queue": depth, **counts}).decode(), markup=False)
        return 0
    _show(out, [depth], as_json=False, title="queue")
    _show(out, [counts["events"]], as_json=False, title="events by status (open work)")
    _show(out, [counts["stages"]], as_json=False, title="waiting per stage")
    _show(
        out,
        [
            {
                **{f"dead {k}": v for k, v in counts["dead"].items()},
                **{f"parked {k}": v for k, v in counts["parked"].items()},
            }
        ],
        as_json=False,
        title="dead letters and parked",
    )
    return 0


async def run_purge(settings: Settings, args: argparse.Namespace, out: Console) -> int:
    """Empty the queue. Events whose jobs are dropped are marked `purged`, so the sweeper does not revive them."""
    async with connections(settings, "purge") as (queue, sessionmaker):
        waiting = await queue.zrange(settings.queue_name, 0, -1)
        job_ids = [raw.decode() for raw in waiting]
        event_ids = [
            int(j.split(":")[1]) for j in job_ids if j.startswith("process_event:") and j.split(":")[1].isdigit()
        ]
        out.print(f"{len(job_ids)} jobs in {settings.queue_name}, {len(event_ids)} of them for webhook events")
        if not job_ids:
            return 0
        answer = "yes" if args.yes else await asyncio.to_thread(input, "purge them? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            out.print("nothing purged")
            return 1
        async with unit_of_work(sessionmaker) as session:
            purged = await webhook_events.purge(session, event_ids) if event_ids else 0
        async with queue.pipeline(transaction=True) as pipe:
            pipe.zrem(settings.queue_name, *job_ids)
            pipe.delete(*[f"arq:job:{j}" for j in job_ids])
            await pipe.execute()
        out.print(f"purged {len(job_ids)} jobs; {purged} events marked purged")
    return 0
