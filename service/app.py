"""The Starlette application: routes, error handlers and the lifespan that owns the engine and the queue client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from db.engine import create_engine, create_sessionmaker
from jobs.enqueue import open_queue
from mailroom.settings import Settings
from service import nylas_webhook
from service.errors import ServiceError, handle_service_error
from service.state import AppState, Resources


async def healthz(request: Request) -> Response:
    """Liveness: the process answers. Touches no dependency, so a database outage does not restart pods."""
    return JSONResponse({"status": "ok"})


def create_app(settings: Settings) -> Starlette:
    if settings.database_url is None or settings.redis_url is None:
        raise ValueError("create_app needs database_url and redis_url (the CLI resolves the embedded defaults)")
    database_url, redis_url = settings.database_url, settings.redis_url

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[AppState]:
        engine = create_engine(
            database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            connect_timeout=settings.db_connect_timeout,
            application_name="mailroom-api",
        )
        queue = open_queue(redis_url, timeout=settings.redis_timeout, queue_name=settings.queue_name)
        resources = Resources(
            settings=settings,
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
            queue=queue,
            webhook_secrets=tuple(secret.get_secret_value() for secret in settings.webhook_secrets),
        )
        try:
            yield {"resources": resources}
        finally:
            await queue.aclose()
            await engine.dispose()

    routes = [
        Route("/webhooks/nylas", nylas_webhook.challenge, methods=["GET"]),
        Route("/webhooks/nylas", nylas_webhook.receive, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={ServiceError: handle_service_error})
