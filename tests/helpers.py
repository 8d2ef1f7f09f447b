"""Reading back what the system stored, for assertions."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
from arq.connections import ArqRedis
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from db.models import Email, Grant, Pause, WebhookDestination, WebhookEvent
from jobs import arq_storage
from jobs.sweep import sweep
from jobs.worker import build_context, close_context


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until_answering(client: httpx.AsyncClient, path: str, *, within: float, what: str) -> None:
    """Poll `path` until it answers 200 (a process starting up), with a deadline."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            if (await client.get(path)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert asyncio.get_running_loop().time() < deadline, f"{what} did not answer {path} within {within}s"
        await asyncio.sleep(0.05)


async def truncate_all(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Empty tables, as a test starts from."""
    async with sessionmaker.begin() as session:
        await session.execute(
            text(
                "TRUNCATE webhook_events, emails, grants, stage_runs, actions, cron_runs, webhook_destinations, "
                "audit_log, pauses, history RESTART IDENTITY CASCADE"
            )
        )


async def pauses(sessionmaker: async_sessionmaker[AsyncSession]) -> list[Pause]:
    async with sessionmaker() as session:
        return list((await session.execute(select(Pause).order_by(Pause.paused_at))).scalars())


async def destinations(sessionmaker: async_sessionmaker[AsyncSession]) -> list[WebhookDestination]:
    async with sessionmaker() as session:
        return list((await session.execute(select(WebhookDestination).order_by(WebhookDestination.id))).scalars())


async def events(sessionmaker: async_sessionmaker[AsyncSession]) -> list[WebhookEvent]:
    async with sessionmaker() as session:
        return list((await session.execute(select(WebhookEvent).order_by(WebhookEvent.id))).scalars())


async def emails(sessionmaker: async_sessionmaker[AsyncSession]) -> list[Email]:
    async with sessionmaker() as session:
        return list((await session.execute(select(Email).order_by(Email.id))).scalars())


async def grant(sessionmaker: async_sessionmaker[AsyncSession], grant_id: str) -> Grant | None:
    async with sessionmaker() as session:
        return await session.get(Grant, grant_id)


async def row_counts(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
    async with sessionmaker() as session:
        result = await session.execute(
            text(
                "SELECT (SELECT count(*) FROM webhook_events) AS webhook_events,"
                " (SELECT count(*) FROM emails) AS emails, (SELECT count(*) FROM grants) AS grants"
            )
        )
        return dict(result.mappings().one())


async def queued_job_ids(redis: ArqRedis, queue_name: str = "mailroom:test") -> list[str]:
    return await arq_storage.queued_ids(redis, queue_name)


async def queued_event_ids(redis: ArqRedis, queue_name: str = "mailroom:test") -> list[int]:
    """The events queued jobs hold: a `process_events` batch's ids, or a `process_event` job's one."""
    ids: list[int] = []
    for job in await arq_storage.read_queued(redis, queue_name, limit=10_000):
        if job.function == "process_events" and job.args:
            ids += job.args[0]
        elif job.function == "process_event" and job.args:
            ids.append(job.args[0])
    return sorted(ids)


async def sweep_now(settings: Settings, redis: ArqRedis) -> dict[str, Any]:
    """A sweep that counts everything unfinished as stuck (the cron's threshold is minutes)."""
    jc = build_context(settings.model_copy(update={"sweep_after_seconds": 0.001}), redis)
    try:
        await asyncio.sleep(0.01)
        return await sweep(jc)
    finally:
        await close_context(jc)


ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
