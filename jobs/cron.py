"""Cron jobs run once per tick across any number of workers, and never overlap with themselves.

arq already gives a tick one job id; the `cron_runs` row makes "once" hold even if that job ran twice, and a
PostgreSQL advisory lock keeps a slow run from overlapping the next tick's.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from db import cron_runs
from db.uow import unit_of_work
from jobs.context import JobContext
from jobs.sweep import erase_expired, sweep
from jobs.sync import sync_recent_emails
from jobs.webhook_health import check_destinations

log = structlog.get_logger(__name__)
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"

CronBody = Callable[[JobContext, str], Awaitable[dict[str, Any]]]


def tick_of(ctx: dict[str, Any]) -> datetime:
    """arq names a cron job `cron:<name>:<scheduled unix ms>`; that time is the tick."""
    job_id = str(ctx.get("job_id") or "")
    head, _, millis = job_id.rpartition(":")
    if head and millis.isdigit():
        return datetime.fromtimestamp(int(millis) / 1000, tz=UTC)
    return datetime.now(UTC).replace(microsecond=0)


async def run_once(jc: JobContext, name: str, tick: datetime, body: CronBody) -> dict[str, Any]:
    async with cron_runs.exclusive(jc.engine, name) as locked:
        if not locked:
            log.warning("cron.overlap_skipped", name=name, tick=tick.isoformat())
            return {"skipped": "previous run still going"}
        async with unit_of_work(jc.sessionmaker) as session:
            run_id = await cron_runs.claim(session, name=name, tick_at=tick, worker=WORKER_NAME)
        if run_id is None:
            return {"skipped": "tick already ran"}
        try:
            result = await body(jc, tick.isoformat())
        except Exception as exc:
            async with unit_of_work(jc.sessionmaker) as session:
                await cron_runs.finish(session, run_id, result=None, error=f"{type(exc).__name__}: {exc}")
            raise
        async with unit_of_work(jc.sessionmaker) as session:
            await cron_runs.finish(session, run_id, result=result, error=None)
        log.info("cron.ran", name=name, tick=tick.isoformat(), **result)
        return result


async def _sweep_body(jc: JobContext, tick: str) -> dict[str, Any]:
    return await sweep(jc)


async def sweep_cron(ctx: dict[str, Any]) -> dict[str, Any]:
    return await run_once(JobContext.from_ctx(ctx), "sweep", tick_of(ctx), _sweep_body)


async def sync_cron(ctx: dict[str, Any]) -> dict[str, Any]:
    return await run_once(JobContext.from_ctx(ctx), "sync_recent_emails", tick_of(ctx), sync_recent_emails)


async def webhook_health_cron(ctx: dict[str, Any]) -> dict[str, Any]:
    return await run_once(JobContext.from_ctx(ctx), "nylas_webhooks", tick_of(ctx), check_destinations)


async def retention_cron(ctx: dict[str, Any]) -> dict[str, Any]:
    return await run_once(JobContext.from_ctx(ctx), "retention", tick_of(ctx), erase_expired)
