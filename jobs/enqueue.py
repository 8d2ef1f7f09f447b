"""Job names, their ids and typed enqueue helpers: the only `jobs` module the API imports to queue work."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from arq.connections import ArqRedis
from arq.jobs import Job

from jobs import arq_storage
from jobs.arq_storage import ManyEnqueuer, NewJob, deserialize, serialize
from jobs.redis_connection import RedisTarget, open_queue, queue_for

__all__ = [
    "RedisTarget",
    "deserialize",
    "open_queue",
    "queue_for",
    "serialize",
]  # the API and the CLI open the queue through here

PROCESS_EVENT = "process_event"
PROCESS_EVENTS = "process_events"
CLASSIFY = "classify"
ACT = "act"
SYNC_GRANT = "sync_grant"
TEST_TASK = "test_task"
# The job that runs each stage of an email's chain.
STAGE_JOBS = {"classify": CLASSIFY, "act": ACT}


def process_event_job_id(event_id: int) -> str:
    return f"{PROCESS_EVENT}:{event_id}"


async def enqueue_process_event(queue: ArqRedis, event_id: int) -> Job | None:
    """Queue the event's job; None when a job with its id is already queued, running or kept as a result."""
    return await queue.enqueue_job(PROCESS_EVENT, event_id, _job_id=process_event_job_id(event_id))


class ProcessEventEnqueuer:
    """Queues events' jobs in one round trip: one `process_event` job each, or one `process_events` job for the lot
    (`batch=True`)."""

    def __init__(self, queue: ArqRedis) -> None:
        self._many = ManyEnqueuer(queue)

    async def enqueue(self, event_ids: Sequence[int], *, batch: bool = False, defer_ms: int = 0) -> int:
        """Returns how many jobs were queued now (per-event jobs: the others already had one)."""
        if not event_ids:
            return 0
        if batch:
            ids = list(event_ids)
            jobs = [NewJob(batch_job_id(ids), PROCESS_EVENTS, (ids,))]
        else:
            jobs = [NewJob(process_event_job_id(e), PROCESS_EVENT, (e,)) for e in event_ids]
        return await self._many.enqueue(jobs, defer_ms=defer_ms)


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


async def batched_event_ids(queue: ArqRedis) -> set[int]:
    """Events a live `process_events` job holds (queued, deferred or running): the sweeper leaves those alone."""
    prefix = PROCESS_EVENTS + ":"
    batches = [j for j in await arq_storage.queued_ids(queue, queue.default_queue_name) if j.startswith(prefix)]
    return {event_id for (event_ids,) in await arq_storage.args_of(queue, batches) for event_id in event_ids}


async def requeue(queue: ArqRedis, job_id: str, function: str, *args: Any, defer_s: float = 0.0) -> bool:
    """Enqueue a job again under its own id, dropping a kept result that would make arq refuse it; False while that
    job is queued or running."""
    if await arq_storage.is_live(queue, job_id):
        return False
    await arq_storage.forget_result(queue, job_id)
    defer = timedelta(seconds=defer_s) if defer_s > 0 else None
    return await queue.enqueue_job(function, *args, _job_id=job_id, _defer_by=defer) is not None


async def requeue_event(queue: ArqRedis, event_id: int, *, defer_s: float = 0.0) -> bool:
    """The event's own `process_event` job, again (a replay, the sweeper, a retry, a grant resumed)."""
    return await requeue(queue, process_event_job_id(event_id), PROCESS_EVENT, event_id, defer_s=defer_s)


async def requeue_stage(queue: ArqRedis, stage: str, email_id: int) -> bool:
    """The email's stage job, again (a replay, the sweeper, a grant resumed)."""
    return await requeue(queue, stage_job_id(stage, email_id), STAGE_JOBS[stage], email_id, False)


async def enqueue_test_task(queue: ArqRedis, message: str) -> Job | None:
    return await queue.enqueue_job(TEST_TASK, message)
