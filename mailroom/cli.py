"""The `mailroom` command: run the API, the worker or both, migrate, and talk to the queue."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import structlog
import uvloop
from arq.jobs import Job
from pydantic import SecretStr
from rich.console import Console

from mailroom.settings import Settings

if TYPE_CHECKING:
    import uvicorn

log = structlog.get_logger("mailroom")
Command = Callable[[Settings, argparse.Namespace], int]
AsyncCommand = Callable[[Settings, argparse.Namespace, Console], Coroutine[Any, Any, int]]
out = Console(highlight=False, soft_wrap=True)


@contextlib.contextmanager
def resolved(settings: Settings, *, need_database: bool = True, need_redis: bool = True) -> Iterator[Settings]:
    """Settings with both URLs filled in: the configured servers, or the embedded ones started for this run."""
    from db.engine import redacted
    from mailroom import embedded

    servers = embedded.start(
        settings.data_dir,
        postgres=need_database and settings.database_url is None,
        redis=need_redis and settings.redis_url is None,
    )
    try:
        update = {k: v for k, v in (("database_url", servers.database_url), ("redis_url", servers.redis_url)) if v}
        final = settings.model_copy(update=update)
        if need_database and final.database_url:
            where = "embedded, data in " + str(settings.data_dir / "postgres") if servers.database_url else "configured"
            log.info("mailroom.database", url=redacted(final.database_url), source=where)
        if need_redis and final.redis_url:
            where = "embedded, data in " + str(settings.data_dir) if servers.redis_url else "configured"
            log.info("mailroom.redis", url=redacted(final.redis_url), source=where)
        yield final
    finally:
        servers.close()


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from mailroom import migrate

    with resolved(settings, need_redis=False) as final:
        assert final.database_url is not None
        migrate.wait_for_database(final.database_url, seconds=final.startup_wait_seconds)
        migrate.upgrade(final.database_url, args.revision)
    return 0


def run_service(main: Coroutine[Any, Any, None]) -> None:
    """Long-running processes run on uvloop: a measurably cheaper event loop for this socket-bound work (README,
    Performance). uvicorn picks it only when it creates the loop itself, which `Server.serve()` does not."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    with resolved(settings) as final:
        run_service(_serve_api(final))
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    with resolved(settings) as final:
        run_service(_run_worker(final, burst=args.burst))
    return 0


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from mailroom import migrate

    with resolved(settings) as final:
        assert final.database_url is not None
        migrate.upgrade(final.database_url)
        if not final.webhook_secrets:
            log.warning("mailroom.no_webhook_secret", hint="set MAILROOM_WEBHOOK_SECRETS; every POST answers 503")
        if not final.admin_token.get_secret_value():
            # Development only: a token for this run, shown on stdout (never in the logs).
            final = final.model_copy(update={"admin_token": SecretStr(secrets.token_urlsafe(16))})
            out.print(
                f"dashboard: http://{final.host}:{final.port}/dashboard  admin token for this run: "
                f"{final.admin_token.get_secret_value()}  (set MAILROOM_ADMIN_TOKEN to choose one)"
            )
        log.info("mailroom.dev", url=f"http://{final.host}:{final.port}/webhooks/nylas")
        run_service(_dev(final))
    return 0


def on_servers(command: AsyncCommand) -> Command:
    """A command that runs one coroutine against the configured (or embedded) servers."""

    def run(settings: Settings, args: argparse.Namespace) -> int:
        with resolved(settings) as final:
            return asyncio.run(command(final, args, out))

    return run


def cmd_enqueue_test(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.enqueue import enqueue_test_task, open_queue

    async def run(final: Settings) -> str:
        assert final.redis_url is not None
        queue = open_queue(final.redis_url, timeout=final.redis_timeout, queue_name=final.queue_name)
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
    from jobs.enqueue import deserialize, open_queue

    async def run(final: Settings) -> dict[str, object]:
        assert final.redis_url is not None
        queue = open_queue(final.redis_url, timeout=final.redis_timeout, queue_name=final.queue_name)
        try:
            job = Job(args.job_id, queue, _queue_name=final.queue_name, _deserializer=deserialize)
            status = await job.status()
            info = await job.result_info()
        finally:
            await queue.aclose()
        answer: dict[str, object] = {"job_id": args.job_id, "status": status.value}
        if info is not None:
            answer.update(
                function=info.function,
                success=info.success,
                result=info.result,
                tries=info.job_try,
                enqueued_at=info.enqueue_time,
                finished_at=info.finish_time,
            )
        return answer

    with resolved(settings, need_database=False) as final:
        answer = asyncio.run(run(final))
    out.print(orjson.dumps(answer, option=orjson.OPT_INDENT_2, default=str).decode())
    return 0 if answer["status"] != "not_found" else 1


def _api_server(settings: Settings) -> uvicorn.Server:
    import uvicorn

    from service.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    return uvicorn.Server(config)


async def _serve_api(settings: Settings) -> None:
    await _api_server(settings).serve()


async def _run_worker(settings: Settings, *, burst: bool = False) -> None:
    from jobs.worker import ResilientWorker

    worker = ResilientWorker(settings, burst=burst)
    try:
        await worker.run()
    except asyncio.CancelledError:
        pass
    finally:
        await worker.close()


async def _dev(settings: Settings) -> None:
    """API and worker in one process: uvicorn owns the signals and the worker stops when it does."""
    from jobs.worker import ResilientWorker

    worker = ResilientWorker(settings, handle_signals=False)
    worker_task = asyncio.create_task(worker.run())
    try:
        await _api_server(settings).serve()
    finally:
        await worker.close()
        with contextlib.suppress(asyncio.CancelledError):
            await worker_task


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailroom",
        description="Nylas webhooks in, stored email out. Configured by MAILROOM_* environment variables (see README).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="migrate, then run the API and a worker in one process")
    dev.set_defaults(run=cmd_dev)
    api = commands.add_parser("api", help="run the HTTP API (webhooks, health)")
    api.set_defaults(run=cmd_api)
    worker = commands.add_parser("worker", help="run an arq worker")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.set_defaults(run=cmd_worker)
    mig = commands.add_parser("migrate", help="apply database migrations")
    mig.add_argument("revision", nargs="?", default="head", help="target revision (default: head)")
    mig.set_defaults(run=cmd_migrate)
    from mailroom import ops

    sync = commands.add_parser("sync", help="sync one grant's recent messages now, in the foreground")
    ops.add_sync_arguments(sync)
    sync.set_defaults(run=on_servers(ops.run_sync))
    rep = commands.add_parser("replay", help="send dead letters (or, with --force, done stages) back to work")
    ops.add_replay_arguments(rep)
    rep.set_defaults(run=on_servers(ops.run_replay))
    from mailroom import inspect_cli

    ins = commands.add_parser("inspect", help="what is active, scheduled, queued, which workers live, what is dead")
    inspect_cli.add_inspect_arguments(ins)
    ins.set_defaults(run=on_servers(inspect_cli.run_inspect))
    stats = commands.add_parser("stats", help="queue depth and open work at a glance")
    inspect_cli.add_stats_arguments(stats)
    stats.set_defaults(run=on_servers(inspect_cli.run_stats))
    purge = commands.add_parser("purge", help="empty the queue (asks first unless --yes)")
    inspect_cli.add_purge_arguments(purge)
    purge.set_defaults(run=on_servers(inspect_cli.run_purge))
    enq = commands.add_parser("enqueue-test", help="enqueue the test task and print its job id")
    enq.add_argument("message", help="text the task returns")
    enq.set_defaults(run=cmd_enqueue_test)
    job = commands.add_parser("job", help="print a job's status and result as JSON")
    job.add_argument("job_id")
    job.set_defaults(run=cmd_job)
    return parser


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    from mailroom.logs import configure_logging

    args = build_parser().parse_args(argv)
    # uvicorn re-raises the SIGTERM it handled once it has shut down; as an exception it unwinds through our
    # `finally` blocks (worker close, embedded servers stop) instead of killing the process on the spot.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        return int(args.run(settings, args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
