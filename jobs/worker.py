"""arq worker wiring: the functions, their limits, and the start-up/shut-down that own the worker's resources."""

from __future__ import annotations

from typing import Any, ClassVar

from arq import Worker
from arq.connections import RedisSettings
from arq.worker import Function, func

from db.engine import create_engine, create_sessionmaker
from jobs import enqueue
from jobs.context import CTX_KEY, JobContext
from jobs.nylas_client import NylasGateway
from jobs.process_event import process_event
from jobs.test_task import test_task
from mailroom.settings import Settings


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.get("settings") or Settings()
    if settings.database_url is None:
        raise RuntimeError("the worker needs MAILROOM_DATABASE_URL (or run it through `mailroom worker`)")
    engine = create_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        connect_timeout=settings.db_connect_timeout,
        application_name="mailroom-worker",
    )
    ctx[CTX_KEY] = JobContext(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        nylas=NylasGateway(
            api_key=settings.nylas_api_key.get_secret_value(),
            api_uri=settings.nylas_api_uri,
            timeout=settings.nylas_timeout,
            # One thread per job slot: a job never waits for a thread while holding its slot.
            threads=settings.worker_concurrency,
        ),
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    jc = ctx.pop(CTX_KEY, None)
    if isinstance(jc, JobContext):
        jc.nylas.close()
        await jc.engine.dispose()


def functions(settings: Settings) -> list[Function]:
    return [
        func(process_event, name=enqueue.PROCESS_EVENT, timeout=settings.job_timeout, max_tries=settings.job_max_tries),
        func(test_task, name=enqueue.TEST_TASK, timeout=max(settings.job_timeout, settings.test_task_sleep + 10)),
    ]


class WorkerSettings:
    """For `arq jobs.worker.WorkerSettings`; settings then come from the environment. `mailroom worker` is preferred."""

    functions: ClassVar[list[Function]] = functions(Settings.model_construct())
    on_startup = startup
    on_shutdown = shutdown
    job_serializer = enqueue.serialize
    job_deserializer = enqueue.deserialize
    queue_name = Settings.model_fields["queue_name"].default


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    """A worker for these settings; `overrides` (e.g. burst=True) win over them."""
    if settings.redis_url is None:
        raise ValueError("create_worker needs redis_url (the CLI resolves the embedded default)")
    options: dict[str, Any] = {
        "functions": functions(settings),
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "queue_name": settings.queue_name,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "ctx": {"settings": settings},
        "max_jobs": settings.worker_concurrency,
        "poll_delay": settings.worker_poll_delay,
        "job_timeout": settings.job_timeout,
        "keep_result": settings.job_keep_result,
        "max_tries": settings.job_max_tries,
        "job_serializer": enqueue.serialize,
        "job_deserializer": enqueue.deserialize,
        "health_check_key": f"{settings.queue_name}:health-check",
    }
    options.update(overrides)
    return Worker(**options)
