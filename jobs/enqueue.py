"""Job names, the job serializer and typed enqueue helpers: the only `jobs` module the API imports."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import orjson
from arq.connections import ArqRedis
from arq.constants import expires_extra_ms, in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.jobs import Job, serialize_job
from arq.utils import timestamp_ms

PROCESS_EVENT = "process_event"
PROCESS_EVENTS = "process_events"
CLASSIFY = "classify"
ACT = "act"
SYNC_GRANT = "sync_grant"
TEST_TASK = "test_task"
# The job that runs each stage of an email's chain.
STAGE_JOBS = {"classify": CLASSIFY, "act": ACT}


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


# arq's enqueue_job costs four round trips per job (WATCH, EXISTS, MULTI/EXEC, UNWATCH); this does what it does for
# any number of jobs in one atomic EVALSHA: a job whose id is queued, running or kept as a result is left alone.
_ENQUEUE_MANY = f"""
local queued = 0
for i = 1, #ARGV, 4 do
  local id = ARGV[i]
  if redis.call('EXISTS', '{job_key_prefix}' .. id, '{result_key_prefix}' .. id) == 0 then
    redis.call('PSETEX', '{job_key_prefix}' .. id, ARGV[i + 3], ARGV[i + 1])
    redis.call('ZADD', KEYS[1], ARGV[i + 2], id)
    queued = queued + 1
  end
end
return queued
"""


class ProcessEventEnqueuer:
    """Queues events' jobs in one round trip, in arq's own job format: one `process_event` job each, or one
    `process_events` job for the lot (`batch=True`)."""

    def __init__(self, queue: ArqRedis) -> None:
        self._queue = queue
        self._script = queue.register_script(_ENQUEUE_MANY)

    async def enqueue(self, event_ids: Sequence[int], *, batch: bool = False, defer_ms: int = 0) -> int:
        """Returns how many jobs were queued now (per-event jobs: the others already had one)."""
        if not event_ids:
            return 0
        now = timestamp_ms()
        score = now + max(0, defer_ms)
        ttl = expires_extra_ms + max(0, defer_ms)
        args: list[str | bytes | int] = []
        if batch:
            ids = list(event_ids)
            payload = serialize_job(PROCESS_EVENTS, (ids,), {}, None, score, serializer=serialize)
            args += [batch_job_id(ids), payload, score, ttl]
        else:
            for event_id in event_ids:
                payload = serialize_job(PROCESS_EVENT, (event_id,), {}, None, score, serializer=serialize)
                args += [process_event_job_id(event_id), payload, score, ttl]
        return int(await self._script(keys=[self._queue.default_queue_name], args=args))


def batch_job_id(event_ids: Sequence[int]) -> str:
    """Unique per job: a batch's events are claimed by whichever run gets them first, so no id needs to dedupe."""
    return f"{PROCESS_EVENTS}:{event_ids[0]}+{len(event_ids) - 1}:{uuid.uuid4().hex[:12]}"


def stage_job_id(stage: str, email_id: int) -> str:
    return f"{STAGE_JOBS[stage]}:{email_id}"


async def enqueue_stage(
    queue: ArqRedis, stage: str, email_id: int, *, force: bool = False, defer_ms: int | None = None
) -> Job | None:
    """Queue the email's next stage; None when that job is already queued or running."""
    return await queue.enqueue_job(
        STAGE_JOBS[stage],
        email_id,
        force,
        _job_id=stage_job_id(stage, email_id),
        _defer_by=timedelta(milliseconds=defer_ms) if defer_ms else None,
    )


async def enqueue_sync_grant(
    queue: ArqRedis, grant_id: str, *, since: float | None = None, page_token: str | None = None, tick: str = ""
) -> Job | None:
    job_id = f"{SYNC_GRANT}:{grant_id}:{tick or page_token or since or 'now'}"
    return await queue.enqueue_job(SYNC_GRANT, grant_id, since, page_token, _job_id=job_id)


async def is_live(queue: ArqRedis, job_id: str) -> bool:
    """True while arq has the job queued, deferred or running."""
    return bool(await queue.exists(job_key_prefix + job_id, in_progress_key_prefix + job_id))


async def batched_event_ids(queue: ArqRedis) -> set[int]:
    """Events a live `process_events` job holds (queued, deferred or running): the sweeper leaves those alone."""
    prefix = (PROCESS_EVENTS + ":").encode()
    members = [m for m in await queue.zrange(queue.default_queue_name, 0, -1) if m.startswith(prefix)]
    if not members:
        return set()
    ids: set[int] = set()
    for raw in await queue.mget([job_key_prefix + m.decode() for m in members]):
        if raw:
            # arq's job format (arq.jobs.serialize_job): the arguments are under "a".
            (event_ids,) = deserialize(raw)["a"]
            ids.update(event_ids)
    return ids


async def requeue(queue: ArqRedis, job_id: str, function: str, *args: Any, defer_s: float = 0.0) -> bool:
    """Enqueue a job again under its own id, dropping a kept result that would make arq refuse it."""
    if await is_live(queue, job_id):
        return False
    await queue.delete(result_key_prefix + job_id)
    defer = timedelta(seconds=defer_s) if defer_s > 0 else None
    return await queue.enqueue_job(function, *args, _job_id=job_id, _defer_by=defer) is not None


async def enqueue_test_task(queue: ArqRedis, message: str) -> Job | None:
    return await queue.enqueue_job(TEST_TASK, message)
