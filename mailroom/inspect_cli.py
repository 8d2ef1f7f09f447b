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
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from db import audit, emails, pauses, webhook_destinations, webhook_events
from db.audit import cli_operator
from db.engine import create_engine, create_sessionmaker
from db.uow import read_session, unit_of_work
from jobs import arq_storage
from jobs.enqueue import batched_event_ids, queue_for
from jobs.heartbeat import live_workers
from jobs.queue_depth import depth as queue_depth
from jobs.queue_depth import queued_count, queued_jobs


@asynccontextmanager
async def connections(
    settings: Settings, name: str
) -> AsyncIterator[tuple[ArqRedis, async_sessionmaker[AsyncSession]]]:
    """A queue client and a small database pool for one operator command."""
    assert settings.redis_url is not None and settings.database_url is not None
    queue = queue_for(settings)
    engine = create_engine(
        settings.database_url,
        pool_size=1,
        max_overflow=1,  # README, Connection budgets: an operator command holds at most two
        application_name=f"mailroom-{name}",
        pgbouncer=settings.database_pgbouncer,
    )
    try:
        yield queue, create_sessionmaker(engine)
    finally:
        await queue.aclose()
        await engine.dispose()


async def confirmed(question: str, *, yes: bool) -> bool:
    """An operator's go-ahead for a destructive command: `--yes`, or "y" typed at the prompt."""
    answer = "yes" if yes else await asyncio.to_thread(input, f"{question} [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def positive(value: str) -> int:
    """argparse type: a whole number from 1 on (a negative --limit must be a usage error, not a traceback)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} is not 1 or more")
    return number


INSPECT_WHAT = {
    "active": "jobs running now, on which worker",
    "scheduled": "jobs waiting for a later time (retries, throttled work)",
    "queued": "jobs ready to run now",
    "workers": "workers alive (a heartbeat in the last 15 s)",
    "dead": "dead letters: events and email stages out of tries, with when they died",
    "emails": "the newest stored emails",
}


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "what",
        choices=list(INSPECT_WHAT),
        help="; ".join(f"{name}: {meaning}" for name, meaning in INSPECT_WHAT.items()),
    )
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    parser.add_argument("--limit", type=positive, default=100, help="show at most this many rows (default: 100)")
    parser.add_argument("--grant", help="emails: only this grant's")


def add_purge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--yes", action="store_true", help="do not ask")
    parser.add_argument("--dry-run", action="store_true", help="list the jobs it would remove, remove nothing")


def add_stats_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="JSON instead of tables")


def _show(out: Console, rows: list[dict[str, Any]], *, as_json: bool, title: str, total: int | None = None) -> None:
    if as_json:
        out.print(orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2).decode(), markup=False)
        return
    total = len(rows) if total is None else total
    table = Table(title=f"{title} ({total})" if total == len(rows) else f"{title} ({len(rows)} shown of {total})")
    columns = list(rows[0]) if rows else ["(none)"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        # Text, not str: a stored value such as a grant id "[/bold]" is data, never Rich markup.
        table.add_row(*(Text(_cell(row.get(c))) for c in columns))
    out.print(table)


def _cell(value: object) -> str:
    if isinstance(value, float) and value > 1e9:
        return datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


async def _rows(
    settings: Settings, args: argparse.Namespace, queue: ArqRedis, sessionmaker: async_sessionmaker[AsyncSession]
) -> tuple[list[dict[str, Any]], int]:
    """The rows to show (at most --limit) and how many there are in all."""
    if args.what in ("queued", "scheduled"):
        scheduled = args.what == "scheduled"
        rows = await queued_jobs(queue, settings.queue_name, scheduled=scheduled, limit=args.limit)
        return rows, await queued_count(queue, settings.queue_name, scheduled=scheduled)
    if args.what == "workers":
        workers = await live_workers(queue, settings.queue_name)
        rows = [
            {"worker": w["name"], "concurrency": w["concurrency"], "running": len(w["jobs"]), "since": w["started_at"]}
            for w in workers
        ]
        return rows[: args.limit], len(rows)
    if args.what == "active":
        workers = await live_workers(queue, settings.queue_name)
        rows = [
            {"job_id": j["job_id"], "worker": w["name"], "started_at": j["started_at"]}
            for w in workers
            for j in w["jobs"]
        ]
        return rows[: args.limit], len(rows)
    async with read_session(sessionmaker) as session:
        if args.what == "emails":
            total, found = await emails.recent(session, limit=args.limit, grant_id=args.grant)
            return [
                {
                    "id": m.id,
                    "grant": m.grant_id,
                    "message": m.message_id,
                    "from": m.from_email,
                    "subject": m.subject,
                    "class": m.classification,
                    "state": m.pipeline_state,
                }
                for m in found
            ], total
        events = await webhook_events.dead(session, limit=args.limit)
        dead_emails = await emails.dead(session, limit=args.limit)
        total = await webhook_events.count_with_status(session, "dead") + await emails.count_dead(session)
    rows = [
        {"stage": "process", "id": f"event {e.id}", "grant": e.grant_id, "died_at": e.updated_at, "error": e.last_error}
        for e in events
    ] + [
        {
            "stage": m.pipeline_state,
            "id": f"email {m.id}",
            "grant": m.grant_id,
            "died_at": m.dead_at,
            "error": m.last_error,
        }
        for m in dead_emails
    ]
    return rows[: args.limit], total


async def run_inspect(settings: Settings, args: argparse.Namespace, out: Console) -> int:
    async with connections(settings, "inspect") as (queue, sessionmaker):
        rows, total = await _rows(settings, args, queue, sessionmaker)
    _show(out, rows, as_json=args.json, title=args.what, total=total)
    return 0


async def run_stats(settings: Settings, args: argparse.Namespace, out: Console) -> int:
    async with connections(settings, "stats") as (queue, sessionmaker):
        counts = await queue_depth(queue, settings.queue_name, sessionmaker, batch_worker=settings.batch_worker)
        async with read_session(sessionmaker) as session:
            destinations = await webhook_destinations.all_destinations(session)
            paused = await pauses.all_pauses(session)
    depth = counts.pop("queue")
    nylas = [
        {"id": d.id, "status": d.status, "unhealthy_since": d.unhealthy_since, "checked_at": d.checked_at}
        for d in destinations
    ]
    if args.json:
        held = [{"scope": p.scope, "target": p.target, "since": p.paused_at, "by": p.paused_by} for p in paused]
        out.print(
            orjson.dumps({"queue": depth, **counts, "nylas_webhooks": nylas, "pauses": held}).decode(), markup=False
        )
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
    for p in paused:
        what = "everything" if p.scope == "all" else f"{p.scope} {p.target}"
        out.print(
            f"[bold yellow]paused: {what}[/] since {p.paused_at:%Y-%m-%d %H:%M} UTC by {p.paused_by} (mailroom resume)"
        )
    for d in destinations:
        if d.status != "active":
            since = f" since {d.unhealthy_since:%Y-%m-%d %H:%M} UTC" if d.unhealthy_since else ""
            out.print(
                f"[bold red]Nylas webhook destination {d.id} is {d.status}{since}[/]: Nylas may be skipping "
                "deliveries; mailroom backfills the grants (README, Nylas's side)",
            )
    if destinations and all(d.status == "active" for d in destinations):
        checked = f"{destinations[0].checked_at:%H:%M:%S} UTC"
        out.print(f"Nylas webhook destinations: {len(destinations)} active (checked {checked})")
    return 0


async def run_purge(settings: Settings, args: argparse.Namespace, out: Console) -> int:
    """Empty the queue: the jobs in Redis, and the events waiting in PostgreSQL for the batch workers. Events
    dropped are marked `purged`, so neither a worker nor the sweeper takes them up again."""
    async with connections(settings, "purge") as (queue, sessionmaker):
        job_ids = await arq_storage.queued_ids(queue, settings.queue_name)
        in_jobs = [
            int(j.split(":")[1]) for j in job_ids if j.startswith("process_event:") and j.split(":")[1].isdigit()
        ] + sorted(await batched_event_ids(queue))
        async with read_session(sessionmaker) as session:
            in_table = await webhook_events.waiting_ids(session) if settings.batch_worker else []
        event_ids = sorted(set(in_jobs) | set(in_table))
        out.print(
            f"{len(job_ids)} jobs in {settings.queue_name}; {len(event_ids)} webhook events waiting "
            f"({len(in_table)} of them in PostgreSQL for the batch workers)"
        )
        if not job_ids and not event_ids:
            return 0
        if args.dry_run:
            rows = await queued_jobs(queue, settings.queue_name, scheduled=None, limit=len(job_ids))
            _show(out, rows, as_json=False, title="would purge: jobs")
            _show(out, [{"event": i} for i in in_table], as_json=False, title="would purge: events waiting")
            out.print("dry run: nothing purged")
            return 0
        if not await confirmed("purge them?", yes=args.yes):
            out.print("nothing purged")
            return 1
        async with unit_of_work(sessionmaker) as session:
            purged = await webhook_events.purge(session, event_ids) if event_ids else 0
            asked = {"queue": settings.queue_name, "jobs": len(job_ids)}
            await audit.record(session, who=cli_operator(), action="purge", filter=asked, rows=len(job_ids) + purged)
        await arq_storage.drop(queue, settings.queue_name, job_ids)
        out.print(
            f"purged {len(job_ids)} jobs; {purged} events marked purged "
            "(bring one back with `mailroom replay --event ID`, all with `mailroom replay --purged`)"
        )
    return 0


def add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=50, help="how many entries, newest first (default 50)")
    parser.add_argument(
        "--action",
        choices=["pause", "resume", "rate", "cancel", "replay", "purge", "erase", "sign_in_refused"],
        help="only this action",
    )
    parser.add_argument("--json", action="store_true", help="one JSON array")


async def run_audit(settings: Settings, args: argparse.Namespace, out: Console) -> int:
    """The audit trail: operators' replays, purges and erasures, and refused sign-ins."""
    async with connections(settings, "audit") as (_, sessionmaker), read_session(sessionmaker) as session:
        entries = await audit.latest(session, limit=max(1, args.limit), action=args.action)
    if args.json:
        listed = [
            {"at": e.at.isoformat(), "who": e.who, "action": e.action, "filter": e.filter, "rows": e.rows}
            for e in entries
        ]
        out.print(orjson.dumps(listed).decode(), markup=False)
        return 0
    if not entries:
        out.print("no operator actions recorded")
        return 0
    for e in entries:
        asked = " ".join(f"{k}={v}" for k, v in e.filter.items())
        count = "" if e.rows is None else f" rows={e.rows}"
        line = f"{e.at.isoformat()}  {e.who}  {e.action}{count}  {asked}"
        out.print(line, markup=False, overflow="ignore", crop=False)
    return 0
