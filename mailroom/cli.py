"""The `mailroom` command: run the API, the worker or both, migrate, and talk to the queue."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

import orjson
import structlog
import uvloop
from pydantic import SecretStr, ValidationError
from rich.console import Console

from core import tracing
from core.problems import CommandError, explain, redacted, settings_error, weak_secrets
from core.settings import Settings
from mailroom import dev_run

log = structlog.get_logger("mailroom")
Command = Callable[[Settings, argparse.Namespace], int]
AsyncCommand = Callable[[Settings, argparse.Namespace, Console], Coroutine[Any, Any, int]]
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
# Commands that run until stopped: their start-up log lines are what an operator wants to see. The others print
# their answer and nothing else unless -v.
LONG_RUNNING = frozenset({"dev", "api", "worker", "migrate", "fake-nylas"})


@contextlib.contextmanager
def resolved(settings: Settings, *, need_database: bool = True, need_redis: bool = True) -> Iterator[Settings]:
    """Settings with both URLs filled in: the configured servers, or the embedded ones started for this run.

    A mistake a person can fix (a database that does not exist, Redis not running) leaves as a CommandError.
    """
    from mailroom import embedded

    servers = embedded.start(
        settings.data_dir,
        postgres=need_database and settings.database_url is None,
        redis=need_redis and settings.redis_url is None,
    )
    final = settings
    try:
        update = {k: v for k, v in (("database_url", servers.database_url), ("redis_url", servers.redis_url)) if v}
        final = settings.model_copy(update=update)
        if need_database and final.database_url:
            where = "embedded, data in " + str(settings.data_dir / "postgres") if servers.database_url else "configured"
            log.info("mailroom.database", url=redacted(final.database_url), source=where)
        if need_redis and final.redis_url:
            where = "embedded, data in " + str(settings.data_dir) if servers.redis_url else "configured"
            log.info("mailroom.redis", url=redacted(final.redis_url), source=where)
        final = _with_dev_fake_nylas(final)
        yield final
    except Exception as exc:
        message = explain(exc, database_url=final.database_url, redis_url=final.redis_url)
        if message is None or isinstance(exc, CommandError):
            raise
        raise CommandError(message) from exc
    finally:
        servers.close()


def _with_dev_fake_nylas(settings: Settings) -> Settings:
    """With no Nylas key configured, a command beside `mailroom dev --fake-nylas` talks to dev's fake Nylas."""
    if settings.nylas_api_key.get_secret_value():
        return settings
    dev = dev_run.read(settings.data_dir)
    if dev is None or dev.fake_nylas_url is None or dev.fake_nylas_key is None:
        return settings
    log.info("mailroom.fake_nylas", url=dev.fake_nylas_url, source="mailroom dev --fake-nylas")
    return settings.model_copy(
        update={"nylas_api_uri": dev.fake_nylas_url, "nylas_api_key": SecretStr(dev.fake_nylas_key)}
    )


def migrate_database(settings: Settings, revision: str = "head") -> None:
    """Wait for PostgreSQL, then upgrade it, over the migrations URL when one is set (a direct one, past PgBouncer)."""
    from core import migrate

    url, pgbouncer = settings.migrations_url, settings.migrations_through_pgbouncer
    assert url is not None
    migrate.wait_for_database(url, seconds=settings.startup_wait_seconds, pgbouncer=pgbouncer)
    migrate.upgrade(url, revision, pgbouncer=pgbouncer)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    with resolved(settings, need_redis=False) as final:
        migrate_database(final, args.revision)
    return 0


def run_service(main: Coroutine[Any, Any, None]) -> None:
    """Long-running processes run on uvloop: a measurably cheaper event loop for this socket-bound work (README,
    Performance). uvicorn picks it only when it creates the loop itself, which `Server.serve()` does not."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def warn_without_webhook_secret(settings: Settings) -> None:
    if not settings.webhook_secrets:
        err.print(
            "[bold yellow]warning:[/] MAILROOM_WEBHOOK_SECRETS is not set: every webhook delivery will be refused "
            "(503) and /readyz reports not ready. Set it to the secret Nylas gave for this destination."
        )
        log.warning("mailroom.no_webhook_secret")


def refuse_weak_secrets(settings: Settings) -> None:
    """Outside `mailroom dev`, a known placeholder or a short secret is refused at start-up, naming the variable."""
    problems = weak_secrets(
        [secret.get_secret_value() for secret in settings.webhook_secrets], settings.admin_token.get_secret_value()
    )
    if problems:
        raise CommandError("; ".join(problems))


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    from mailroom.api_server import api_server

    refuse_weak_secrets(settings)
    warn_without_webhook_secret(settings)
    with resolved(settings) as final, traced("mailroom-api"):
        run_service(api_server(final).serve())
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    with resolved(settings) as final, traced("mailroom-worker"):
        run_service(_run_worker(final, burst=args.burst))
    return 0


@contextlib.contextmanager
def traced(service_name: str) -> Iterator[None]:
    """OpenTelemetry for this process when configured (core/tracing.py); what it buffered is sent at exit."""
    tracing.setup(service_name)
    try:
        yield
    finally:
        tracing.shutdown()


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from mailroom import dev

    run = dev_run.DevRun(settings.data_dir)
    try:
        run.claim()
    except dev_run.AlreadyRunning as exc:
        raise CommandError(str(exc)) from None
    fake = dev.start_fake_nylas() if args.fake_nylas else None
    try:
        with resolved(settings) as final, traced("mailroom-dev"):
            migrate_database(final)
            final, notes = dev.prepare(final, fake=fake)
            run.publish(
                dev_run.DevInfo(
                    pid=os.getpid(),
                    api_url=f"http://{final.host}:{final.port}",
                    webhook_secret=final.webhook_secrets[0].get_secret_value(),
                    fake_nylas_url=fake.url if fake else None,
                    fake_nylas_key=final.nylas_api_key.get_secret_value() if fake else None,
                )
            )
            token_chosen = bool(settings.admin_token.get_secret_value())
            run_service(dev.serve(final, dev.banner(final, token_chosen=token_chosen, fake=fake, notes=notes), out))
    finally:
        run.release()
        if fake is not None:
            fake.stop()
    return 0


def on_servers(command: AsyncCommand) -> Command:
    """A command that runs one coroutine against the configured (or embedded) servers."""

    def run(settings: Settings, args: argparse.Namespace) -> int:
        with resolved(settings) as final:
            return asyncio.run(command(final, args, out))

    return run


def cmd_enqueue_test(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.enqueue import enqueue_test_task, queue_for

    async def run(final: Settings) -> str:
        assert final.redis_url is not None
        queue = queue_for(final)
        try:
            job = await enqueue_test_task(queue, args.message)
        finally:
            await queue.aclose()
        assert job is not None  # no _job_id is given, so arq never dedupes this one
        return job.job_id

    with resolved(settings, need_database=False) as final:
        out.print(asyncio.run(run(final)))
    return 0


def cmd_job(settings: Settings, args: argparse.Namespace) -> int:
    from jobs import arq_storage
    from jobs.enqueue import queue_for

    async def run(final: Settings) -> dict[str, Any]:
        assert final.redis_url is not None
        queue = queue_for(final)
        try:
            return await arq_storage.status(queue, final.queue_name, args.job_id)
        finally:
            await queue.aclose()

    with resolved(settings, need_database=False) as final:
        answer = asyncio.run(run(final))
    out.print(orjson.dumps(answer, option=orjson.OPT_INDENT_2, default=str).decode())
    return 0 if answer["status"] != "not_found" else 1


async def _run_worker(settings: Settings, *, burst: bool = False) -> None:
    from jobs.worker import ResilientWorker

    worker = ResilientWorker(settings, burst=burst)
    try:
        await worker.run()
    except asyncio.CancelledError:
        pass
    finally:
        await worker.close()


def _common_options(*, top: bool) -> argparse.ArgumentParser:
    """-v and --debug, accepted before or after the command name (`mailroom -v stats`, `mailroom stats -v`)."""
    common = argparse.ArgumentParser(add_help=False)
    default = False if top else argparse.SUPPRESS
    common.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="show log lines (on stderr) for every command"
    )
    common.add_argument(
        "--debug", action="store_true", default=default, help="DEBUG logs, and the full traceback of any error"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailroom",
        description="Nylas webhooks in, stored email out. Configured by MAILROOM_* environment variables (see README).",
        parents=[_common_options(top=True)],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options(top=False)

    def command(name: str, help: str, run: Command, description: str | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=description or help, parents=[common])
        sub.set_defaults(run=run)
        return sub

    from mailroom import dev, inspect_cli, ops, sample_webhook, webhooks_cli

    dev_parser = command(
        "dev",
        "migrate, then run the API and a worker in one process (the embedded servers when none are configured)",
        cmd_dev,
        "Run everything for development: migrate, then the API and a worker in one process. With no "
        "MAILROOM_DATABASE_URL / MAILROOM_REDIS_URL it starts its own PostgreSQL and Redis under MAILROOM_DATA_DIR "
        "(./.mailroom). Prints the dashboard URL and an admin token once the API answers.",
    )
    dev.add_dev_arguments(dev_parser)
    command(
        "api",
        "run the HTTP API: webhooks, health, queue depth, metrics, the admin API and the dashboard",
        cmd_api,
    )
    worker = command("worker", "run a worker that takes jobs from the queue until stopped", cmd_worker)
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    mig = command("migrate", "apply database migrations (waits for PostgreSQL to answer first)", cmd_migrate)
    mig.add_argument("revision", nargs="?", default="head", help="target revision (default: head)")
    sync = command("sync", "sync one grant's recent messages now, in the foreground", on_servers(ops.run_sync))
    ops.add_sync_arguments(sync)
    rep = command(
        "replay", "send dead letters (or, with --force, done stages) back to work", on_servers(ops.run_replay)
    )
    ops.add_replay_arguments(rep)
    erase = command(
        "erase",
        "erase one grant's stored mail content (an erasure request), keeping ids and counts (asks first unless --yes)",
        on_servers(ops.run_erase),
    )
    ops.add_erase_arguments(erase)
    ins = command(
        "inspect",
        "what is active, scheduled, queued, which workers live, what is dead, or the stored emails",
        on_servers(inspect_cli.run_inspect),
    )
    inspect_cli.add_inspect_arguments(ins)
    stats = command("stats", "queue depth and open work at a glance", on_servers(inspect_cli.run_stats))
    inspect_cli.add_stats_arguments(stats)
    purge = command(
        "purge",
        "empty the queue; the events whose jobs are dropped are marked purged (asks first unless --yes)",
        on_servers(inspect_cli.run_purge),
    )
    inspect_cli.add_purge_arguments(purge)
    paused = command(
        "pause",
        "pause everything, one grant or one stage; every worker holds it within seconds (mailroom resume ends it)",
        on_servers(ops.run_pause),
    )
    ops.add_pause_arguments(paused)
    resumed = command(
        "resume",
        "end a pause; what waited for it is queued again and goes on where it stopped",
        on_servers(ops.run_resume),
    )
    ops.add_pause_arguments(resumed)
    cancel = command(
        "cancel",
        "cancel a queued or deferred job, or every waiting job of a function (--function, --state; --dry-run counts); "
        "its event is marked purged, or its email stage dead (replay brings it back)",
        on_servers(ops.run_cancel),
    )
    ops.add_cancel_arguments(cancel)
    rate = command(
        "rate",
        "change one grant's Nylas call rate at runtime (--default: back to MAILROOM_NYLAS_RATE_PER_GRANT)",
        on_servers(ops.run_rate),
    )
    ops.add_rate_arguments(rate)
    trail = command(
        "audit",
        "the audit trail: who replayed, purged or erased what (and how many rows), and refused sign-ins",
        on_servers(inspect_cli.run_audit),
    )
    inspect_cli.add_audit_arguments(trail)
    enq = command("enqueue-test", "enqueue the test task and print its job id", cmd_enqueue_test)
    enq.add_argument("message", help="text the task returns")
    job = command("job", "print a job's status and result as JSON (exit 1 when no such job)", cmd_job)
    job.add_argument("job_id", help="the id `enqueue-test` printed, or any job id from `inspect`")
    send = command(
        "send-test-webhook",
        "post one signed notification to a running mailroom, as Nylas would",
        sample_webhook.run,
        sample_webhook.__doc__,
    )
    sample_webhook.add_arguments(send)
    hooks = command(
        "webhooks",
        "the application's webhook destinations at Nylas: list, create, rotate-secret, delete",
        webhooks_cli.run,
        webhooks_cli.__doc__,
    )
    webhooks_cli.add_arguments(hooks)
    fake = command(
        "fake-nylas",
        "run the fake Nylas API on its own (what `dev --fake-nylas` runs inside dev)",
        cmd_fake_nylas,
    )
    fake.add_argument("--port", type=int, default=8001, help="port on 127.0.0.1 (default: 8001)")
    return parser


def cmd_fake_nylas(settings: Settings, args: argparse.Namespace) -> int:
    from mailroom import dev
    from mailroom.fake_nylas import API_KEY

    server = dev.start_fake_nylas(port=args.port)
    out.print(
        f"fake Nylas at {server.url}: MAILROOM_NYLAS_API_URI={server.url} MAILROOM_NYLAS_API_KEY={API_KEY}; "
        f"fault switches: POST {server.url}/_fake/fail (README, Nylas on the laptop). Ctrl-C stops it."
    )
    try:
        while True:  # until Ctrl-C (KeyboardInterrupt) or SIGTERM (SystemExit, from _exit_on_sigterm)
            signal.pause()
    finally:
        server.stop()
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    from core.logs import configure_logging

    args = build_parser().parse_args(argv)
    # uvicorn re-raises the SIGTERM it handled once it has shut down; as an exception it unwinds through our
    # `finally` blocks (worker close, embedded servers stop) instead of killing the process on the spot.
    if threading.current_thread() is threading.main_thread():  # tests call main() on a thread
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        settings = Settings()
    except ValidationError as exc:
        err.print(f"mailroom: {settings_error(exc)}", markup=False)
        return 2
    debug = args.debug or settings.log_level.upper() == "DEBUG"
    level = "DEBUG" if args.debug else settings.log_level
    if args.command not in LONG_RUNNING and not args.verbose and not debug:
        level = "WARNING"
    configure_logging(level, settings.log_format)
    try:
        return int(args.run(settings, args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = explain(exc)
        if message is None:
            raise
        if debug:
            err.print_exception()
        err.print(f"mailroom: {message}", markup=False)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
