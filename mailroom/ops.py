"""Operator commands that work on the data: `mailroom sync` and `mailroom replay`."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from jobs.enqueue import open_queue
from jobs.errors import Throttled
from jobs.replay import ReplayFilter, replay
from jobs.sync import SyncProgress, default_since, finish, sync_pages
from jobs.worker import build_context, close_context
from mailroom.settings import Settings


def parse_time(value: str) -> datetime:
    """ISO 8601 (a date, or a date and time; UTC when no offset is given)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def add_sync_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grant", required=True, help="the grant id to sync")
    parser.add_argument(
        "--since", type=parse_time, help="list messages received since (ISO 8601); default: the grant's cursor"
    )


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--event", type=int, action="append", default=[], help="a dead event id (repeatable)")
    parser.add_argument("--email", type=int, action="append", default=[], help="a dead email id (repeatable)")
    parser.add_argument("--stage", choices=["process", "classify", "act"], help="only this stage")
    parser.add_argument("--grant", help="only this grant")
    parser.add_argument("--since", type=parse_time, help="died at or after (ISO 8601)")
    parser.add_argument("--until", type=parse_time, help="died before (ISO 8601)")
    parser.add_argument("--error", help="only where the error text contains this")
    parser.add_argument("--force", action="store_true", help="also run stages that succeeded (emails only)")
    parser.add_argument("--dry-run", action="store_true", help="count what would be replayed, change nothing")


async def run_sync(settings: Settings, args: argparse.Namespace, out: Console) -> int:
    """The cron's sync for one grant, in the foreground, without a worker; new emails are queued for classify."""
    assert settings.redis_url is not None
    queue = open_queue(settings.redis_url, timeout=settings.redis_timeout, queue_name=settings.queue_name)
    jc = build_context(settings, queue, application_name="mailroom-sync")
    try:
        progress = SyncProgress(
            grant_id=args.grant,
            since=args.since or await default_since(jc, args.grant),
            started=datetime.now(UTC),
        )
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=out, transient=True) as bar:
            task = bar.add_task(f"syncing {args.grant}", total=None)

            def on_page(p: SyncProgress) -> None:
                bar.update(task, description=f"syncing {p.grant_id}: {p.pages} pages, {p.listed} messages")

            while True:
                try:
                    await sync_pages(jc, progress, page_token=progress.next_page, max_pages=None, on_page=on_page)
                    break
                except Throttled as exc:
                    # In the foreground there is no queue to defer to: wait for the grant's share and go on.
                    await asyncio.sleep(exc.wait)
        await finish(jc, progress)
    finally:
        await close_context(jc)
        await queue.aclose()
    table = Table(title=f"sync {args.grant} since {progress.since.isoformat()}")
    for name in ("pages", "listed", "new", "updated"):
        table.add_column(name, justify="right")
    table.add_row(str(progress.pages), str(progress.listed), str(progress.new), str(progress.updated))
    out.print(table)
    out.print(f"{progress.new} new emails (no webhook had brought them) queued for classification")
    return 0


async def run_replay(settings: Settings, args: argparse.Namespace, out: Console) -> int:
    from mailroom.inspect_cli import connections

    async with connections(settings, "replay") as (queue, sessionmaker):
        found = await replay(
            sessionmaker,
            queue,
            ReplayFilter(
                stage=args.stage,
                grant_id=args.grant,
                since=args.since,
                until=args.until,
                error_contains=args.error,
                event_ids=tuple(args.event),
                email_ids=tuple(args.email),
                force=args.force,
            ),
            dry_run=args.dry_run,
        )
    verb = "would replay" if args.dry_run else "replayed"
    out.print(f"{verb} {len(found.event_ids)} events and {len(found.emails)} email stages")
    return 0
