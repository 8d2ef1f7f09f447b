"""Job names, the job serializer and typed enqueue helpers: the only `jobs` module the API imports."""

from __future__ import annotations

from typing import Any

import orjson
from arq.connections import ArqRedis
from arq.jobs import Job

PROCESS_EVENT = "process_event"
TEST_TASK = "test_task"


def serialize(value: Any) -> bytes:
    """JSON, not pickle: a job payload from Redis must never be able to run code in the worker."""
    return orjson.dumps(value, default=_fallback)


def deserialize(raw: bytes) -> Any:
    return orjson.loads(raw)


def _fallback(value: object) -> object:
    # arq stores a failed job's exception as its result; keep its text rather than lose the result.
    if isinstance(value, BaseException):
        return {"error": type(value).__name__, "message": str(value)}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def open_queue(redis_url: str, *, timeout: float, queue_name: str) -> ArqRedis:
    """An arq client that connects lazily, so the API starts (and keeps answering) while Redis is down."""
    redis: ArqRedis = ArqRedis.from_url(
        redis_url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        health_check_interval=30,
    )
    redis.job_serializer = serialize
    redis.job_deserializer = deserialize
    redis.default_queue_name = queue_name
    return redis


def process_event_job_id(event_id: int) -> str:
    return f"{PROCESS_EVENT}:{event_id}"


async def enqueue_process_event(queue: ArqRedis, event_id: int) -> Job | None:
    """Queue the event's job; None when a job with its id is already queued, running or kept as a result."""
    return await queue.enqueue_job(PROCESS_EVENT, event_id, _job_id=process_event_job_id(event_id))


async def enqueue_test_task(queue: ArqRedis, message: str) -> Job | None:
    return await queue.enqueue_job(TEST_TASK, message)
