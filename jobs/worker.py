"""arq worker wiring: the functions, their limits, the cron schedule, and the start-up/shut-down that own the
worker's resources."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any, ClassVar

import structlog
from arq import Worker
from arq.connections import ArqRedis, RedisSettings
from arq.cron import CronJob, cron
from arq.worker import Function, func
from redis.exceptions import RedisError

from core.budgets import postgres_connections
from core.metrics import Metrics
from core.settings import Settings
from db.engine import create_engine, create_sessionmaker, open_connections
from db.states import Stage
from jobs import arguments, enqueue
from jobs.act_on_email import act, act_stage
from jobs.arguments import checked
from jobs.classifier import build_classifier
from jobs.classify_email import classify, classify_stage
from jobs.context import CTX_KEY, JobContext
from jobs.cron import retention_cron, sweep_cron, sync_cron, webhook_health_cron
from jobs.heartbeat import Heartbeat
from jobs.message_fetch import Fetcher, HttpFetcher, SdkFetcher
from jobs.nylas_client import NylasGateway
from jobs.pausing import PauseWatch
from jobs.process_batch import process_events
from jobs.process_event import process_event
from jobs.pump import Pump
from jobs.redis_connection import RedisTarget, queue_for
from jobs.redis_connection import open_connections as open_redis_connections
from jobs.rules import load_rules
from jobs.smoke_task import test_task
from jobs.sync import sync_grant
from jobs.throttle import GrantThrottle

log = structlog.get_logger(__name__)

# Our own try counts (in PostgreSQL) decide retries; arq's counter also grows on every deferral for throttling,
# so its limit is only a backstop.
ARQ_MAX_TRIES = 1000
PUMP_KEY = "pump"


def build_context(settings: Settings, queue: ArqRedis, *, application_name: str = "mailroom-worker") -> JobContext:
    """Everything a job needs; the caller closes it with `close_context`."""
    if settings.database_url is None:
        raise RuntimeError("the worker needs MAILROOM_DATABASE_URL (or run it through `mailroom worker`)")
    engine = create_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        connect_timeout=settings.db_connect_timeout,
        application_name=application_name,
        pgbouncer=settings.database_pgbouncer,
    )
    rules = load_rules(settings.rules_file)
    metrics = Metrics(queue)
    gateway = NylasGateway(
        api_key=settings.nylas_api_key.get_secret_value(),
        api_uri=settings.nylas_api_uri,
        timeout=settings.nylas_timeout,
        # One thread per job slot: a job never waits for a thread while holding its slot.
        threads=settings.worker_concurrency,
        metrics=metrics,
    )
    fetcher: Fetcher = (
        SdkFetcher(gateway)
        if settings.nylas_fetch == "sdk"
        else HttpFetcher(gateway.client, connections=settings.nylas_connections, metrics=metrics)
    )
    sessionmaker = create_sessionmaker(engine)
    return JobContext(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        pauses=PauseWatch(sessionmaker),
        nylas=gateway,
        fetcher=fetcher,
        queue=queue,
        throttle=GrantThrottle(queue, rate=settings.nylas_rate_per_grant),
        rules=rules,
        classifier=build_classifier(settings.classifier, rules),
        metrics=metrics,
        heartbeat=Heartbeat(queue, settings.queue_name, concurrency=settings.worker_concurrency),
        stages={Stage.CLASSIFY: classify_stage, Stage.ACT: act_stage},
    )


async def close_context(jc: JobContext) -> None:
    await jc.metrics.aclose()
    await jc.fetcher.aclose()
    jc.nylas.close()
    await jc.engine.dispose()


def connections_of(jc: JobContext, pump: Pump | None) -> dict[str, int]:
    listening = 1 if pump is not None and pump.listening else 0
    return {
        "postgresql": open_connections(jc.engine) + listening,
        "postgresql_budget": postgres_connections(jc.settings, "worker"),
        "redis": open_redis_connections(jc.queue),
    }


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.get("settings") or Settings()
    jc = build_context(settings, ctx["redis"])
    pump = Pump(jc) if settings.batch_worker else None
    jc.heartbeat.connections = functools.partial(connections_of, jc, pump)
    jc.heartbeat.outcomes = jc.metrics.job_outcomes
    jc.metrics.start()
    jc.heartbeat.start()
    ctx[CTX_KEY] = jc
    if pump is not None:
        ctx[PUMP_KEY] = pump
        if ctx.get("burst"):
            # A burst worker (tests, one-off drains) runs what waits now, then arq's queue (retries among it).
            await pump.drain(ctx)
        else:
            await pump.start(ctx)


async def job_started(ctx: dict[str, Any]) -> None:
    JobContext.from_ctx(ctx).heartbeat.job_started(str(ctx.get("job_id")))


async def job_ended(ctx: dict[str, Any]) -> None:
    JobContext.from_ctx(ctx).heartbeat.job_ended(str(ctx.get("job_id")))


async def shutdown(ctx: dict[str, Any]) -> None:
    pump = ctx.pop(PUMP_KEY, None)
    if isinstance(pump, Pump):
        await pump.aclose()
    jc = ctx.pop(CTX_KEY, None)
    if isinstance(jc, JobContext):
        await jc.heartbeat.aclose()
        await close_context(jc)


def functions(settings: Settings) -> list[Function]:
    timeout = settings.job_timeout
    stage = checked(email_id=arguments.row_id, force=arguments.flag)
    sync = checked(
        grant_id=arguments.text(256),
        since=arguments.optional(arguments.timestamp),
        page_token=arguments.optional(arguments.text(4096)),
        started=arguments.optional(arguments.timestamp),
    )
    return [
        func(
            checked(event_id=arguments.row_id)(process_event),
            name=enqueue.PROCESS_EVENT,
            timeout=timeout,
            max_tries=ARQ_MAX_TRIES,
        ),
        func(
            checked(event_ids=arguments.row_ids)(process_events),
            name=enqueue.PROCESS_EVENTS,
            timeout=timeout,
            max_tries=ARQ_MAX_TRIES,
        ),
        func(stage(classify), name=enqueue.CLASSIFY, timeout=timeout, max_tries=ARQ_MAX_TRIES),
        func(stage(act), name=enqueue.ACT, timeout=timeout, max_tries=ARQ_MAX_TRIES),
        func(sync(sync_grant), name=enqueue.SYNC_GRANT, timeout=timeout, max_tries=ARQ_MAX_TRIES),
        # Not longer than the others: arq's recovery delay for a killed worker is the longest timeout + 10 s.
        func(
            checked(message=arguments.text(10_000))(test_task),
            name=enqueue.TEST_TASK,
            timeout=max(timeout, 2 * settings.test_task_sleep),
        ),
    ]


def cron_jobs(settings: Settings) -> list[CronJob]:
    every = settings.sync_interval_minutes
    return [
        cron(
            sweep_cron,
            name="cron:sweep",
            second=set(range(0, 60, settings.sweep_interval_seconds)),
            timeout=settings.job_timeout,
            run_at_startup=False,
        ),
        cron(
            sync_cron,
            name="cron:sync_recent_emails",
            minute=set(range(0, 60, every)),
            second=0,
            timeout=settings.job_timeout,
        ),
        # Hourly, off the hour's other work: old content is erased in batches (README, Security).
        cron(retention_cron, name="cron:retention", minute=23, second=30, timeout=settings.job_timeout),
        *_webhook_health(settings),
    ]


def _webhook_health(settings: Settings) -> list[CronJob]:
    every = settings.nylas_webhook_check_seconds
    if every == 0:
        return []
    when: dict[str, Any] = (
        {"second": set(range(0, 60, every))}
        if every < 60
        else {"minute": set(range(0, 60, every // 60)), "second": 45}  # off the sync's minute boundary
    )
    return [cron(webhook_health_cron, name="cron:nylas_webhooks", timeout=settings.job_timeout, **when)]


class WorkerSettings:
    """For `arq jobs.worker.WorkerSettings`; settings then come from the environment. `mailroom worker` is preferred."""

    functions: ClassVar[list[Function]] = functions(Settings.model_construct())
    cron_jobs: ClassVar[list[CronJob]] = cron_jobs(Settings.model_construct())
    on_startup = startup
    on_shutdown = shutdown
    on_job_start = job_started
    on_job_end = job_ended
    job_serializer = enqueue.serialize
    job_deserializer = enqueue.deserialize
    queue_name = Settings.model_fields["queue_name"].default


def _redis_settings(settings: Settings) -> RedisSettings:
    # Keep trying at start-up instead of crashing: in compose or Kubernetes, Redis may come up after us.
    return RedisTarget.of(settings).arq_settings(
        timeout=settings.redis_timeout, connect_retries=max(1, int(settings.startup_wait_seconds))
    )


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    """A worker for these settings; `overrides` (e.g. burst=True) win over them."""
    if settings.redis_url is None:
        raise ValueError("create_worker needs redis_url (the CLI resolves the embedded default)")
    options: dict[str, Any] = {
        "functions": functions(settings),
        "cron_jobs": cron_jobs(settings),
        "redis_settings": _redis_settings(settings),
        "queue_name": settings.queue_name,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "on_job_start": job_started,
        "on_job_end": job_ended,
        "ctx": {"settings": settings, "burst": bool(overrides.get("burst"))},
        "max_jobs": settings.worker_concurrency,
        "poll_delay": settings.worker_poll_delay,
        "job_timeout": settings.job_timeout,
        "keep_result": settings.job_keep_result,
        "max_tries": ARQ_MAX_TRIES,
        "job_serializer": enqueue.serialize,
        "job_deserializer": enqueue.deserialize,
        "health_check_key": f"{settings.queue_name}:health-check",
        # SIGTERM: take no new jobs, let running ones finish for this long, then cancel them (arq re-queues them).
        "job_completion_wait": settings.shutdown_grace_seconds,
    }
    if settings.redis_sentinels:
        # arq's own Sentinel pool never closes its connections to the sentinels; ours does (and follows the master
        # the same way). Without arq's start-up retries, ResilientWorker's restart covers a Redis that is not up yet.
        options["redis_pool"] = queue_for(settings)
    options.update(overrides)
    return Worker(**options)


async def close_worker(worker: Worker) -> None:
    """Stop a worker (if it still runs) and release what it holds, even with jobs in flight.

    arq's `Worker.close` cancels the jobs in flight and then awaits them without `return_exceptions`: a job cancelled
    before its own error handling began (between taking the job and calling its function) re-raises CancelledError
    out of `close`, which then skips `on_shutdown` (the pump, the heartbeat, our engine) and its Redis pool's close,
    leaving the pump claiming events for a worker that is gone. Cancelling and reaping the jobs first makes the
    close complete. arq puts a cancelled job back on the queue (or the sweeper finds its work).
    """
    if worker.main_task is not None and not worker.main_task.done():
        worker.main_task.cancel()  # take no new jobs while the running ones are reaped
    in_flight = list(worker.tasks.values())
    for task in in_flight:
        task.cancel()
    await asyncio.gather(*in_flight, return_exceptions=True)
    worker.tasks.clear()
    await worker.close()


class ResilientWorker:
    """An arq worker that outlives a Redis outage.

    arq's poll loop ends on the first Redis error, which would leave `mailroom worker` exiting (fine under an
    orchestrator, but every in-flight job is cut off) and `mailroom dev` serving webhooks with no worker at all.
    This starts a new worker once Redis answers again (arq's own start-up waits for it).
    """

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self._settings = settings
        self._overrides = overrides
        self._current: Worker | None = None
        self._closing = False
        self.restarts = 0

    async def run(self) -> None:
        """Until the worker ends normally or is cancelled; the caller closes it (`close()`) either way."""
        while not self._closing:
            worker = self._current = create_worker(self._settings, **self._overrides)
            worker.on_stop = self._stopped
            try:
                await worker.async_run()
                return
            except (RedisError, OSError) as exc:
                # After SIGTERM (arq stops picking jobs first) an error is part of stopping, not a reason to restart.
                if self._overrides.get("burst") or self._closing or not worker.allow_pick_jobs:
                    raise
                log.warning("worker.redis_lost", error=f"{type(exc).__name__}: {exc}", restart_in_s=1)
            # Its jobs were cancelled with its loop; arq runs them again (or the sweeper finds their work).
            with contextlib.suppress(RedisError, OSError, RuntimeError):
                await close_worker(worker)
            self.restarts += 1
            await asyncio.sleep(1)

    def _stopped(self, signal: Any) -> None:
        self._closing = True

    async def close(self) -> None:
        self._closing = True
        if self._current is not None:
            with contextlib.suppress(RedisError, OSError):
                await close_worker(self._current)
