"""Operator commands that work on the data: `mailroom sync`, `mailroom replay` and `mailroom erase`."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.problems import CommandError
from core.settings import Settings
from db import audit, emails, erasure, webhook_events
from db.uow import read_session, unit_of_work
from jobs.enqueue import queue_for
from jobs.errors import PermanentError, Throttled, TransientError
from jobs.replay import ReplayFilter, replay
from jobs.sync import SyncProgress, default_since, finish, sync_pages
from jobs.worker import build_context, close_context


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
    parser.add_argument(
        "--purged", action="store_true", help="events that `mailroom purge` dropped, instead of dead ones"
    )
    parser.add_argument("--dry-run", action="store_true", help="count what would be replayed, change nothing")


async def run_sync(settings: Settings, args: argparse.Namespace, out: Console) -> int:
    """The cron's sync for one grant, in the foreground, without a worker; new emails are queued for classify."""
    assert settings.redis_url is not None
    queue = queue_for(settings)
    jc = build_context(settings, queue, application_name="mailroom-sync")
    try:
        try:
            # Before anything is stored: the grant must exist at Nylas (and the key must be right).
            await jc.nylas.find_grant(args.grant)
        except (PermanentError, TransientError) as exc:
            raise _nylas_problem(exc, args.grant, settings.nylas_api_uri) from exc
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
                except (PermanentError, TransientError) as exc:
                    raise _nylas_problem(exc, args.grant, settings.nylas_api_uri) from exc
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


def _nylas_problem(exc: PermanentError | TransientError, grant_id: str, api_uri: str) -> CommandError:
    if isinstance(exc, TransientError):
        return CommandError(f"Nylas did not answer usefully at {api_uri}: {exc}")
    if exc.status_code == 404:
        # A mistyped grant id must fail now, not become a grant synced every ten minutes forever.
        return CommandError(f"Nylas at {api_uri} has no grant {grant_id!r}: check the id")
    if exc.status_code in (401, 403):
        return CommandError(f"Nylas at {api_uri} refused the API key ({exc.status_code}): check MAILROOM_NYLAS_API_KEY")
    return CommandError(f"Nylas refused the sync of grant {grant_id!r}: {exc}")


async def run_replay(settings: Settings, args: argparse.Namespace, out: Console) -> int:
    from mailroom.inspect_cli import connections

    try:
        chosen = ReplayFilter(
            stage=args.stage,
            grant_id=args.grant,
            since=args.since,
            until=args.until,
            error_contains=args.error,
            event_ids=tuple(args.event),
            email_ids=tuple(args.email),
            force=args.force,
            purged=args.purged,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    async with connections(settings, "replay") as (queue, sessionmaker):
        found = await replay(sessionmaker, queue, chosen, who=audit.cli_operator(), dry_run=args.dry_run)
        reasons = [] if found.event_ids or found.emails else await _why_nothing(sessionmaker, chosen)
    verb = "would replay" if args.dry_run else "replayed"
    out.print(f"{verb} {len(found.event_ids)} events and {len(found.emails)} email stages")
    if reasons:
        for reason in reasons:
            out.print(f"  {reason}", markup=False)
        return 1
    return 0


async def _why_nothing(sessionmaker: async_sessionmaker[AsyncSession], chosen: ReplayFilter) -> list[str]:
    """Why a replay found nothing, one line per id asked for (or one for a filter)."""
    reasons = []
    async with read_session(sessionmaker) as session:
        known = await webhook_events.statuses(session, chosen.event_ids) if chosen.event_ids else {}
        for event_id in chosen.event_ids:
            status = known.get(event_id)
            reasons.append(
                f"event {event_id}: not found"
                if status is None
                else f"event {event_id}: {status}, not dead or purged (only those are replayed)"
            )
        stages = await emails.pipeline_states(session, chosen.email_ids) if chosen.email_ids else {}
        for email_id in chosen.email_ids:
            state = stages.get(email_id)
            reasons.append(
                f"email {email_id}: not found"
                if state is None
                else f"email {email_id}: not dead (its pipeline is at {state}; --force re-runs a done stage)"
            )
    if not reasons:
        what = "purged events" if chosen.purged else "dead letters"
        reasons.append(f"no {what} match these filters (`mailroom inspect dead` lists the dead ones)")
    return reasons


def add_erase_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grant", required=True, help="the grant whose stored mail content is erased")
    parser.add_argument("--dry-run", action="store_true", help="count what would be erased, change nothing")
    parser.add_argument("--yes", action="store_true", help="do not ask")


async def run_erase(settings: Settings, args: argparse.Namespace, out: Console) -> int:
    """An erasure request: every piece of one grant's content, from every table; ids and counts stay."""
    from mailroom.inspect_cli import confirmed, connections

    async with connections(settings, "erase") as (_, sessionmaker):
        async with read_session(sessionmaker) as session:
            found = await erasure.erase_grant(session, args.grant, dry_run=True)
        out.print(
            f"grant {args.grant}: {found.emails} emails, {found.events} notifications and {found.actions} actions "
            "hold content",
            markup=False,
        )
        if args.dry_run or not (found.emails or found.events or found.actions):
            out.print("dry run: nothing erased" if args.dry_run else "nothing to erase")
            return 0
        if not await confirmed("erase it?", yes=args.yes):
            out.print("nothing erased")
            return 1
        async with unit_of_work(sessionmaker) as session:
            erased = await erasure.erase_grant(session, args.grant)
            rows = erased.emails + erased.events + erased.actions
            await audit.record(
                session, who=audit.cli_operator(), action="erase", filter={"grant": args.grant}, rows=rows
            )
    out.print(f"erased {erased.emails} emails, {erased.events} notifications and {erased.actions} actions")
    return 0


def add_pause_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="everything: no claim, no stage runs")
    which.add_argument("--grant", metavar="G", help="one grant: its notifications wait unprocessed")
    which.add_argument(
        "--stage", choices=["process", "classify", "act"], help="one stage: emails wait at it (act: a kill switch)"
    )


def _scope(args: argparse.Namespace) -> tuple[str, str]:
    if args.all:
        return "all", ""
    if args.grant:
        return "grant", args.grant
    return "stage", args.stage


async def run_pause(settings: Settings, args: argparse.Namespace, out: Console) -> int:
    from jobs import pausing
    from mailroom.inspect_cli import connections

    scope, target = _scope(args)
    async with connections(settings, "pause") as (_, sessionmaker):
        done = await pausing.pause(sessionmaker, scope=scope, target=target, who=audit.cli_operator())
    what = "everything" if scope == "all" else f"{scope} {target}"
    out.print(
        f"paused {what}: every worker holds it within {pausing.REFRESH_S:g} s" if done else f"{what} was paused already"
    )
    return 0


async def run_resume(settings: Settings, args: argparse.Namespace, out: Console) -> int:
    from jobs import pausing
    from mailroom.inspect_cli import connections

    scope, target = _scope(args)
    async with connections(settings, "resume") as (queue, sessionmaker):
        queued = await pausing.resume(
            sessionmaker,
            queue,
            scope=scope,
            target=target,
            who=audit.cli_operator(),
            batch_worker=settings.batch_worker,
        )
    what = "everything" if scope == "all" else f"{scope} {target}"
    if queued is None:
        out.print(f"{what} was not paused")
        return 1
    out.print(f"resumed {what}; {queued} waiting emails and events queued again")
    return 0


def add_rate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grant", required=True, metavar="G", help="the grant")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("rate", nargs="?", type=int, help="Nylas calls a second for this grant, across all workers")
    which.add_argument("--default", action="store_true", help="back to MAILROOM_NYLAS_RATE_PER_GRANT")


async def run_rate(settings: Settings, args: argparse.Namespace, out: Console) -> int:
    from jobs import pausing
    from mailroom.inspect_cli import connections

    rate = None if args.default else args.rate
    async with connections(settings, "rate") as (_, sessionmaker):
        try:
            await pausing.set_rate(sessionmaker, grant_id=args.grant, rate=rate, who=audit.cli_operator())
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    said = f"{rate} calls a second" if rate else f"the default, {settings.nylas_rate_per_grant} calls a second"
    out.print(f"grant {args.grant}: {said}; every worker holds it within {pausing.REFRESH_S:g} s")
    return 0


def add_cancel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", nargs="?", help="one job's id (`mailroom inspect queued` or `scheduled`)")
    parser.add_argument("--function", metavar="F", help="every waiting job of this function (process_event, …)")
    parser.add_argument(
        "--state",
        choices=["ready", "scheduled", "waiting"],
        help="with --function, or alone: which waiting jobs (ready: due now; scheduled: deferred; waiting: both)",
    )
    parser.add_argument("--grant", help="only jobs for this grant's events, emails or syncs")
    parser.add_argument("--error", help="only jobs whose event or email last failed with this text")
    parser.add_argument("--since", type=parse_time, help="only jobs queued at or after (ISO 8601)")
    parser.add_argument("--until", type=parse_time, help="only jobs queued at or before (ISO 8601)")
    parser.add_argument("--dry-run", action="store_true", help="count what matches, cancel nothing")
    parser.add_argument("--yes", action="store_true", help="do not ask")


async def run_cancel(settings: Settings, args: argparse.Namespace, out: Console) -> int:
    from jobs import job_control
    from mailroom.inspect_cli import confirmed, connections

    filtered = any((args.function, args.state, args.grant, args.error, args.since, args.until))
    if bool(args.job_id) == filtered:
        raise CommandError(
            "give a job id, or any of --state, --function, --grant, --error, --since, --until for every waiting job "
            "that matches"
        )
    async with connections(settings, "cancel") as (queue, sessionmaker):
        if args.job_id:
            try:
                done = await job_control.cancel(
                    sessionmaker, queue, settings.queue_name, args.job_id, who=audit.cli_operator()
                )
            except job_control.NotCancellable as exc:
                raise CommandError(str(exc)) from None
            marked = " and what it stood for marked (mailroom replay brings it back)" if done["marked"] else ""
            out.print(f"cancelled {args.job_id} (it was {done['was']}){marked}", markup=False)
            return 0
        chosen = job_control.JobFilter(
            state=args.state or "waiting",
            function=args.function,
            grant=args.grant,
            error=args.error,
            since=args.since,
            until=args.until,
        )
        who = audit.cli_operator()
        counted = await job_control.cancel_matching(
            sessionmaker, queue, settings.queue_name, chosen=chosen, who=who, dry_run=True
        )
        by_function = ", ".join(f"{n} {f}" for f, n in sorted(counted["by_function"].items())) or "none"
        more = f" (the first {job_control.READ_AT_MOST}; run it again for the rest)" if counted["more_waiting"] else ""
        out.print(f"{counted['matched']} waiting jobs match{more}: {by_function}", markup=False)
        if args.dry_run or not counted["matched"]:
            if args.dry_run:
                out.print("dry run: nothing cancelled")
            return 0
        if not await confirmed(f"cancel {counted['matched']} jobs?", yes=args.yes):
            out.print("nothing cancelled")
            return 1
        done = await job_control.cancel_matching(
            sessionmaker, queue, settings.queue_name, chosen=chosen, who=who, dry_run=False
        )
        out.print(
            f"cancelled {done['matched']} jobs; {done.get('marked', 0)} events or email stages marked "
            "(mailroom replay brings them back)",
            markup=False,
        )
    return 0
