"""What is queued, running and stuck, read from Redis and PostgreSQL without scanning keys or tables.

Shared by the API (/queue, /metrics, the dashboard) and the CLI (`mailroom inspect`, `mailroom stats`).
"""

from __future__ import annotations

import time
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import open_work, webhook_events
from db.uow import read_session
from jobs import arq_storage
from jobs.heartbeat import live_workers


async def redis_depth(queue: ArqRedis, queue_name: str) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    queued = await arq_storage.counts(queue, queue_name, now_ms=now_ms)
    workers = await live_workers(queue, queue_name)
    in_progress = sum(len(w.get("jobs", [])) for w in workers)
    oldest_age = (now_ms - queued.oldest_ready_ms) / 1000 if queued.oldest_ready_ms is not None else 0.0
    return {
        # arq leaves a running job in the queue until it finishes: ready counts only what waits.
        "ready": max(0, queued.ready - in_progress),
        "deferred": queued.deferred,
        "in_progress": in_progress,
        "oldest_ready_age_seconds": round(max(0.0, oldest_age), 3),
        "workers": len(workers),
    }


async def depth(
    queue: ArqRedis, queue_name: str, sessionmaker: async_sessionmaker[AsyncSession], *, batch_worker: bool
) -> dict[str, Any]:
    """The queue as autoscalers, alerts, `/queue` and `mailroom stats` see it: Redis's jobs and the open work in
    PostgreSQL. With the batch worker, events waiting for a claim are ready work like jobs in Redis, so `ready` and
    its age cover the whole backlog."""
    redis_part = await redis_depth(queue, queue_name)
    async with read_session(sessionmaker) as session:
        counts = await open_work.counts(session)
        oldest = await webhook_events.oldest_waiting(session) if batch_worker else None
    if batch_worker:
        waiting = counts["events"]["received"]
        redis_part["ready"] += waiting
        redis_part["waiting_events"] = waiting
        if oldest is not None:
            age = round(max(0.0, time.time() - oldest.timestamp()), 3)
            redis_part["oldest_ready_age_seconds"] = max(redis_part["oldest_ready_age_seconds"], age)
    return {"queue": redis_part, **counts}


def _score_range(scheduled: bool | None) -> tuple[int | str, int | str]:
    now_ms = int(time.time() * 1000)
    if scheduled is None:
        return "-inf", "+inf"
    return (now_ms + 1, "+inf") if scheduled else ("-inf", now_ms)


async def queued_count(queue: ArqRedis, queue_name: str, *, scheduled: bool | None) -> int:
    low, high = _score_range(scheduled)
    return await arq_storage.count(queue, queue_name, low=low, high=high)


async def queued_jobs(
    queue: ArqRedis, queue_name: str, *, scheduled: bool | None, limit: int = 100
) -> list[dict[str, Any]]:
    """Jobs waiting now (ready), later (`scheduled`: deferred retries and throttled work) or either (None), oldest
    first."""
    low, high = _score_range(scheduled)
    return [
        {
            "job_id": job.job_id,
            "function": job.function,
            "args": job.args,
            "tries": job.tries,
            "run_at": job.run_at_ms / 1000,
        }
        for job in await arq_storage.read_queued(queue, queue_name, low=low, high=high, limit=limit)
    ]
