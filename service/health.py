"""Liveness, readiness, queue depth and metrics: what orchestrators, autoscalers and Prometheus poll."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from db.errors import DatabaseError, translate_errors
from jobs.inspect import database_counts, redis_depth
from mailroom import metrics as metrics_module
from mailroom.migrate import current_revision, head_revision
from service.state import Resources

CHECK_TIMEOUT = 3.0


async def healthz(request: Request) -> Response:
    """Liveness: the process answers. Touches no dependency, so a database outage does not restart pods."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when PostgreSQL answers at the latest migration, Redis answers, and a worker is alive."""
    resources: Resources = request.state.resources
    checks: dict[str, Any] = {}

    async def database() -> None:
        with translate_errors():
            async with resources.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            current = await current_revision(resources.engine)
        head = head_revision()
        checks["database"] = "ok"
        checks["schema"] = "ok" if current == head else f"at {current}, latest is {head}: run `mailroom migrate`"

    async def redis_and_workers() -> None:
        await resources.queue.ping()
        checks["redis"] = "ok"
        depth = await redis_depth(resources.queue, resources.settings.queue_name)
        checks["workers"] = "ok" if depth["workers"] else "no worker has sent a heartbeat in the last 15 s"

    for name, probe in (("database", database), ("redis", redis_and_workers)):
        try:
            await asyncio.wait_for(probe(), CHECK_TIMEOUT)
        except (DatabaseError, OSError, TimeoutError) as exc:
            checks.setdefault(name, f"unreachable: {type(exc).__name__}")
        except Exception as exc:
            checks.setdefault(name, f"failed: {type(exc).__name__}: {exc}")
    # Without a secret every delivery is refused: not ready, so no load balancer sends Nylas here.
    checks["webhook_secrets"] = (
        "ok" if resources.settings.webhook_secrets else "not set: every delivery is refused (MAILROOM_WEBHOOK_SECRETS)"
    )
    ready = all(checks.get(key) == "ok" for key in ("database", "schema", "redis", "workers", "webhook_secrets"))
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


async def depth(resources: Resources) -> dict[str, Any]:
    queue = await redis_depth(resources.queue, resources.settings.queue_name)
    with translate_errors():
        async with resources.sessionmaker() as session:
            counts = await database_counts(session)
    return {"queue": queue, **counts, "at": time.time()}


async def queue(request: Request) -> Response:
    """Queue depth for autoscalers and people: O(1) Redis calls and indexed counts of open work only."""
    resources: Resources = request.state.resources
    try:
        return JSONResponse(await depth(resources))
    except (DatabaseError, OSError) as exc:
        return JSONResponse({"error": "unavailable", "detail": str(exc)}, status_code=503)


async def metrics(request: Request) -> Response:
    resources: Resources = request.state.resources
    await resources.metrics.flush()  # this process's own last second, so a scrape right after an event sees it
    counters, histograms = await resources.metrics.read()
    gauges: dict[str, tuple[str, float]] = {}
    try:
        current = await depth(resources)
        gauges = {
            "mailroom_queue_ready": ("Jobs ready to run now", current["queue"]["ready"]),
            "mailroom_queue_deferred": ("Jobs waiting for a retry or for throttle room", current["queue"]["deferred"]),
            "mailroom_queue_in_progress": ("Jobs running now", current["queue"]["in_progress"]),
            "mailroom_queue_oldest_ready_age_seconds": (
                "Age of the oldest ready job",
                current["queue"]["oldest_ready_age_seconds"],
            ),
            "mailroom_workers": ("Workers alive", current["queue"]["workers"]),
            "mailroom_dead_letters_waiting": (
                "Dead events and emails waiting for a replay",
                current["dead"]["events"] + current["dead"]["emails"],
            ),
        }
    except (DatabaseError, OSError):
        pass  # counters still render; the gauges come back with the database
    body = metrics_module.render(counters, histograms, gauges)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
