"""Liveness, readiness, queue depth and metrics: what orchestrators, autoscalers and Prometheus poll."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from core import metrics as metrics_module
from core.budgets import postgres_connections
from core.metrics import Gauge
from core.migrate import current_revision, head_revision
from db import grants, webhook_destinations
from db.engine import open_connections, ping
from db.errors import DatabaseError, translate_errors
from db.models import WebhookDestination
from db.uow import read_session
from jobs.heartbeat import live_workers, newest_beat
from jobs.queue_depth import depth as queue_depth
from jobs.queue_depth import redis_depth
from jobs.redis_connection import open_connections as open_redis_connections
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
            await ping(resources.engine)
            current = await current_revision(resources.engine)
        head = head_revision()
        checks["database"] = "ok"
        checks["schema"] = "ok" if current == head else f"at {current}, latest is {head}: run `mailroom migrate`"
        if current == head:
            async with read_session(resources.sessionmaker) as session:
                checks["nylas_webhooks"] = destinations_said(await webhook_destinations.unhealthy(session))

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
            # The kind of failure only: an exception's text names internal hosts and ports, and /readyz is public.
            checks.setdefault(name, f"failed: {type(exc).__name__}")
    # Without a secret every delivery is refused: not ready, so no load balancer sends Nylas here.
    checks["webhook_secrets"] = (
        "ok" if resources.settings.webhook_secrets else "not set: every delivery is refused (MAILROOM_WEBHOOK_SECRETS)"
    )
    # nylas_webhooks is told, not required: taking the API out of service would not bring Nylas's deliveries back.
    ready = all(checks.get(key) == "ok" for key in ("database", "schema", "redis", "workers", "webhook_secrets"))
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


def destinations_said(unhealthy: list[WebhookDestination]) -> str:
    """A destination that is not active, in a line: its id and status and since when (no URL: /readyz is public)."""
    if not unhealthy:
        return "ok"
    return "; ".join(
        f"{d.id} {d.status} since {d.unhealthy_since:%Y-%m-%d %H:%M} UTC: Nylas may be skipping deliveries"
        if d.unhealthy_since
        else f"{d.id} {d.status}"
        for d in unhealthy
    )


async def depth(resources: Resources) -> dict[str, Any]:
    settings = resources.settings
    with translate_errors():
        found = await queue_depth(
            resources.queue, settings.queue_name, resources.sessionmaker, batch_worker=settings.batch_worker
        )
    return {**found, "at": time.time()}


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
    gauges: dict[str, Gauge] = {}
    newest = await newest_beat(resources.queue, resources.settings.queue_name)
    if newest is not None:
        gauges["mailroom_worker_heartbeat_age_seconds"] = Gauge.single(
            "Seconds since any worker last sent a heartbeat", max(0.0, time.time() - newest)
        )
    gauges |= connection_gauges(resources, await live_workers(resources.queue, resources.settings.queue_name))
    try:
        current = await depth(resources)
        async with read_session(resources.sessionmaker) as session:
            by_state = await grants.count_by_state(session)
            by_status = await webhook_destinations.count_by_status(session)
            oldest_sync = await grants.oldest_sync(session)
    except (DatabaseError, OSError):
        pass  # counters still render; the gauges come back with the database
    else:
        queue = current["queue"]
        gauges |= {
            "mailroom_queue_ready": Gauge.single("Jobs ready to run now", queue["ready"]),
            "mailroom_queue_deferred": Gauge.single("Jobs waiting for a retry or for throttle room", queue["deferred"]),
            "mailroom_queue_in_progress": Gauge.single("Jobs running now", queue["in_progress"]),
            "mailroom_queue_oldest_ready_age_seconds": Gauge.single(
                "Age of the oldest ready job", queue["oldest_ready_age_seconds"]
            ),
            "mailroom_workers": Gauge.single("Workers alive (a heartbeat in the last 15 s)", queue["workers"]),
            "mailroom_dead_letters_waiting": Gauge.single(
                "Dead events and emails waiting for a replay", current["dead"]["events"] + current["dead"]["emails"]
            ),
            "mailroom_nylas_webhook_destinations": Gauge(
                "The application's webhook destinations at Nylas by status, as the last check saw them",
                {(status,): count for status, count in by_status.items()},
                ("status",),
            ),
            "mailroom_grants": Gauge(
                "Grants by state: active, paused (refused credentials), expired, deleted",
                {(state,): count for state, count in by_state.items()},
                ("state",),
            ),
        }
        if oldest_sync is not None:
            gauges["mailroom_sync_oldest_success_timestamp_seconds"] = Gauge.single(
                "Unix time of the least recent successful sync among grants that are synced", oldest_sync.timestamp()
            )
    body = metrics_module.render(counters, histograms, gauges)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def connection_gauges(resources: Resources, workers: list[dict[str, Any]]) -> dict[str, Gauge]:
    """This API process's connections now, and each live worker's at its last heartbeat, beside their budgets."""
    me = f"api:{socket.gethostname()}:{os.getpid()}"
    held: dict[tuple[str, ...], float] = {(me, "postgresql"): float(open_connections(resources.engine))}
    held[(me, "redis")] = float(open_redis_connections(resources.queue))
    budget: dict[tuple[str, ...], float] = {(me, "postgresql"): float(postgres_connections(resources.settings, "api"))}
    for worker in workers:
        process, reported = f"worker:{worker.get('name')}", worker.get("connections") or {}
        for server in ("postgresql", "redis"):
            if server in reported:
                held[(process, server)] = float(reported[server])
        if "postgresql_budget" in reported:
            budget[(process, "postgresql")] = float(reported["postgresql_budget"])
    labels = ("process", "server")
    return {
        "mailroom_connections_open": Gauge(
            "Connections a process holds open now (workers: at their last heartbeat)", held, labels
        ),
        "mailroom_connections_budget": Gauge(
            "The most connections a process opens to PostgreSQL at its settings (README, Connection budgets)",
            budget,
            labels,
        ),
    }
