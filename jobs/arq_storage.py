"""How arq keeps jobs in Redis, known here and nowhere else: its keys, its job format and the Lua that writes it.

mailroom goes past arq's public API in a few places (one round trip for many jobs, reading what a queued job holds,
purging, holding a stage's in-progress mark while it runs inline). Each of those depends on arq's storage layout, which
arq does not promise to keep: `WRITTEN_FOR` pins the arq release this module was checked against, and
tests/test_arq_storage.py fails on any other, and checks each function against arq's own writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from arq.connections import ArqRedis
from arq.constants import (
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import Job, serialize_job
from arq.utils import timestamp_ms

WRITTEN_FOR = "0.28.0"


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


def as_queue(redis: ArqRedis, *, queue_name: str) -> ArqRedis:
    """An arq client speaking our job format on our queue."""
    redis.job_serializer = serialize
    redis.job_deserializer = deserialize
    redis.default_queue_name = queue_name
    return redis


@dataclass(frozen=True)
class NewJob:
    job_id: str
    function: str
    args: tuple[Any, ...]


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


class ManyEnqueuer:
    """Queues any number of jobs in one round trip, in arq's own job format."""

    def __init__(self, queue: ArqRedis) -> None:
        self._queue = queue
        self._script = queue.register_script(_ENQUEUE_MANY)

    async def enqueue(self, jobs: Sequence[NewJob], *, defer_ms: int = 0) -> int:
        """Returns how many were queued now (the others' ids were queued, running or kept as a result already)."""
        if not jobs:
            return 0
        score = timestamp_ms() + max(0, defer_ms)
        # A job's key outlives its due time by arq's own margin, so a job nobody runs does not stay forever.
        ttl = expires_extra_ms + max(0, defer_ms)
        args: list[str | bytes | int] = []
        for job in jobs:
            payload = serialize_job(job.function, job.args, {}, None, score, serializer=serialize)
            args += [job.job_id, payload, score, ttl]
        return int(await self._script(keys=[self._queue.default_queue_name], args=args))


async def is_live(queue: ArqRedis, job_id: str) -> bool:
    """True while arq has the job queued, deferred or running."""
    return bool(await queue.exists(job_key_prefix + job_id, in_progress_key_prefix + job_id))


async def running(queue: ArqRedis, job_ids: Sequence[str]) -> set[str]:
    """Those of these jobs arq is running now (arq leaves a running job in the queue until it ends)."""
    if not job_ids:
        return set()
    async with queue.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.exists(in_progress_key_prefix + job_id)
        found = await pipe.execute()
    return {job_id for job_id, exists in zip(job_ids, found, strict=True) if exists}


async def forget_result(queue: ArqRedis, job_id: str) -> None:
    """arq refuses a job id it keeps a result for; a job run again under its own id needs the old one gone."""
    await queue.delete(result_key_prefix + job_id)


async def hold_in_progress(queue: ArqRedis, job_id: str, *, ms: int) -> bool:
    """Set arq's in-progress mark for a job that runs outside arq (a stage run inline), so arq does not start that
    job beside it; False when the job is running already."""
    return bool(await queue.set(in_progress_key_prefix + job_id, b"1", px=ms, nx=True))


async def release_in_progress(queue: ArqRedis, job_id: str) -> None:
    await queue.delete(in_progress_key_prefix + job_id)


@dataclass(frozen=True)
class StoredJob:
    """What arq keeps of any job: its id, what it calls, and how many tries it had."""

    job_id: str
    function: str | None
    args: list[Any] | None
    tries: int | None


@dataclass(frozen=True)
class QueuedJob(StoredJob):
    run_at_ms: float
    enqueued_ms: float | None = None


async def queued_ids(
    queue: ArqRedis, queue_name: str, *, low: float | str = "-inf", high: float | str = "+inf"
) -> list[str]:
    return [raw.decode() for raw in await queue.zrangebyscore(queue_name, low, high)]


@dataclass(frozen=True)
class QueueCounts:
    ready: int  # due now, running ones included (arq leaves a running job in the queue until it ends)
    deferred: int
    oldest_ready_ms: float | None


async def counts(queue: ArqRedis, queue_name: str, *, now_ms: int) -> QueueCounts:
    async with queue.pipeline(transaction=False) as pipe:
        pipe.zcount(queue_name, "-inf", now_ms)
        pipe.zcount(queue_name, now_ms + 1, "+inf")
        pipe.zrangebyscore(queue_name, "-inf", now_ms, start=0, num=1, withscores=True)
        ready, deferred, oldest = await pipe.execute()
    return QueueCounts(ready=int(ready), deferred=int(deferred), oldest_ready_ms=oldest[0][1] if oldest else None)


async def count(queue: ArqRedis, queue_name: str, *, low: float | str = "-inf", high: float | str = "+inf") -> int:
    return int(await queue.zcount(queue_name, low, high))


async def read_queued(
    queue: ArqRedis, queue_name: str, *, low: float | str = "-inf", high: float | str = "+inf", limit: int = 100
) -> list[QueuedJob]:
    """Jobs due between `low` and `high` (unix ms), oldest first, with what each one will call."""
    entries = await queue.zrangebyscore(queue_name, low, high, start=0, num=limit, withscores=True)
    if not entries:
        return []
    ids = [raw.decode() for raw, _ in entries]
    payloads = await queue.mget([job_key_prefix + job_id for job_id in ids])
    return [_queued(job_id, raw, score) for job_id, (_, score), raw in zip(ids, entries, payloads, strict=True)]


def _queued(job_id: str, raw: bytes | None, run_at_ms: float) -> QueuedJob:
    """A job from arq's job format (arq.jobs.serialize_job): f function, a args, k kwargs, t tries, et enqueue time."""
    info = deserialize(raw) if raw else {}
    return QueuedJob(job_id, info.get("f"), info.get("a"), info.get("t"), run_at_ms, info.get("et"))


@dataclass(frozen=True)
class FinishedJob(StoredJob):
    success: bool
    result: Any
    enqueued_ms: float | None
    started_ms: float | None
    finished_ms: float | None


async def results(queue: ArqRedis, job_ids: Sequence[str]) -> list[FinishedJob]:
    """The results arq still keeps (for MAILROOM_JOB_KEEP_RESULT) of these jobs, in the order asked."""
    if not job_ids:
        return []
    found = []
    for job_id, raw in zip(job_ids, await queue.mget([result_key_prefix + j for j in job_ids]), strict=True):
        if not raw:
            continue
        # arq's result format (arq.jobs.serialize_result): t tries, f function, a args, s success, r result,
        # et enqueue time, st start, ft finish (ms).
        info = deserialize(raw)
        found.append(
            FinishedJob(
                job_id=job_id,
                function=info.get("f"),
                args=info.get("a"),
                tries=info.get("t"),
                success=bool(info.get("s")),
                result=info.get("r"),
                enqueued_ms=info.get("et"),
                started_ms=info.get("st"),
                finished_ms=info.get("ft"),
            )
        )
    return found


async def read_jobs(queue: ArqRedis, job_ids: Sequence[str]) -> dict[str, QueuedJob]:
    """What each of these jobs will call, for those still stored (queued or running); `run_at_ms` is unknown (0)."""
    if not job_ids:
        return {}
    payloads = await queue.mget([job_key_prefix + j for j in job_ids])
    return {job_id: _queued(job_id, raw, 0) for job_id, raw in zip(job_ids, payloads, strict=True) if raw}


async def args_of(queue: ArqRedis, job_ids: Sequence[str]) -> list[list[Any]]:
    """The arguments of each queued job still stored (a job that just finished has none)."""
    if not job_ids:
        return []
    return [deserialize(raw)["a"] for raw in await queue.mget([job_key_prefix + j for j in job_ids]) if raw]


async def drop(queue: ArqRedis, queue_name: str, job_ids: Sequence[str]) -> None:
    """Take jobs off the queue for good: the queue entry and the stored job, in one transaction."""
    if not job_ids:
        return
    async with queue.pipeline(transaction=True) as pipe:
        pipe.zrem(queue_name, *job_ids)
        pipe.delete(*[prefix + j for j in job_ids for prefix in (job_key_prefix, retry_key_prefix)])
        await pipe.execute()


async def status(queue: ArqRedis, queue_name: str, job_id: str) -> dict[str, Any]:
    """A job's status (queued, deferred, in_progress, complete, not_found) and, once it finished, its result."""
    job = Job(job_id, queue, _queue_name=queue_name, _deserializer=deserialize)
    state = await job.status()
    answer: dict[str, Any] = {"job_id": job_id, "status": state.value}
    info = await job.result_info()
    if info is not None:
        answer.update(
            function=info.function,
            success=info.success,
            result=info.result,
            tries=info.job_try,
            enqueued_at=info.enqueue_time.isoformat(),
            finished_at=info.finish_time.isoformat(),
        )
    return answer
