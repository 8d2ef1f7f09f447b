"""The Starlette application: routes, error handlers and the lifespan that owns the engine and the queue client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from core import tracing
from core.metrics import Metrics
from core.settings import Settings
from db.engine import create_engine, create_sessionmaker
from jobs.enqueue import queue_for
from service import admin, controls, dashboard, health, history, nylas_webhook, openapi
from service.body_limits import BoundedBodies
from service.errors import ServiceError, handle_redis_error, handle_service_error
from service.event_writer import EventWriter
from service.headers import SecurityHeaders
from service.history import HistorySampler
from service.state import AppState, Resources


def create_app(settings: Settings) -> Starlette:
    if settings.database_url is None or settings.redis_url is None:
        raise ValueError("create_app needs database_url and redis_url (the CLI resolves the embedded defaults)")
    database_url = settings.database_url

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[AppState]:
        engine = create_engine(
            database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            connect_timeout=settings.db_connect_timeout,
            application_name="mailroom-api",
            pgbouncer=settings.database_pgbouncer,
        )
        queue = queue_for(settings)
        sessionmaker = create_sessionmaker(engine)
        resources = Resources(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            queue=queue,
            webhook_secrets=tuple(secret.get_secret_value() for secret in settings.webhook_secrets),
            metrics=Metrics(queue),
            writer=EventWriter(
                sessionmaker,
                queue,
                max_batch=settings.ingest_max_batch,
                writers=settings.ingest_writers,
                batches=settings.batch_worker,
            ),
        )
        sampler = HistorySampler(resources)
        resources.metrics.start()
        resources.writer.start()
        sampler.start()
        try:
            yield {"resources": resources}
        finally:
            await sampler.aclose()
            await resources.writer.aclose()
            await resources.metrics.aclose()
            await queue.aclose()
            await engine.dispose()

    routes = [
        Route("/webhooks/nylas", nylas_webhook.endpoint, methods=["GET", "POST"]),
        Route("/openapi.json", openapi.openapi, methods=["GET"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/queue", health.queue, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
        Route("/jobs", controls.list_jobs, methods=["GET"]),
        Route("/jobs/cancel", controls.cancel_matching, methods=["POST"]),
        Route("/jobs/{job_id}", admin.job_status, methods=["GET"]),
        Route("/jobs/{job_id}/cancel", controls.cancel_job, methods=["POST"]),
        Route("/events", admin.list_events, methods=["GET"]),
        Route("/events/{event_id}", admin.event_detail, methods=["GET"]),
        Route("/events/{event_id}/replay", admin.replay_event, methods=["POST"]),
        Route("/replay", admin.bulk_replay, methods=["POST"]),
        Route("/erase", admin.erase_grant, methods=["POST"]),
        Route("/pause", controls.pause, methods=["POST"]),
        Route("/resume", controls.resume, methods=["POST"]),
        Route("/rate", controls.grant_rate, methods=["POST"]),
        Route("/api/history", history.endpoint, methods=["GET"]),
        *dashboard.routes(),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            # The root span of each notification's trace, when tracing is on (core/tracing.py).
            *tracing.middleware(),
            Middleware(SecurityHeaders),
            Middleware(BoundedBodies, own_limit=frozenset({"/webhooks/nylas"})),
        ],
        lifespan=lifespan,
        exception_handlers={ServiceError: handle_service_error, RedisError: handle_redis_error},
    )
