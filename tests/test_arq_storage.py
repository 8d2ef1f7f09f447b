"""jobs/arq_storage.py reads and writes arq's own keys: pinned to the arq release it was written for, and checked
against what arq itself writes, so an arq upgrade that moves a key fails here instead of silently in production."""

from __future__ import annotations

from importlib.metadata import version

from arq.connections import ArqRedis
from arq.jobs import JobStatus

from core.settings import Settings
from jobs import arq_storage
from jobs.arq_storage import ManyEnqueuer, NewJob
from tests.harness import drain


def test_written_for_the_installed_arq() -> None:
    assert version("arq") == arq_storage.WRITTEN_FOR, (
        "arq changed: check jobs/arq_storage.py against its storage (arq/constants.py, arq/jobs.py, the worker's "
        "in-progress and result keys), then update WRITTEN_FOR"
    )


async def test_jobs_queued_in_one_round_trip_are_jobs_arq_runs(settings: Settings, redis: ArqRedis) -> None:
    queued = await ManyEnqueuer(redis).enqueue(
        [NewJob("test_task:a", "test_task", ("one",)), NewJob("test_task:b", "test_task", ("two",))]
    )
    assert queued == 2
    assert await ManyEnqueuer(redis).enqueue([NewJob("test_task:a", "test_task", ("again",))]) == 0, "ids dedupe"
    assert [(j.job_id, j.function, j.args) for j in await arq_storage.read_queued(redis, settings.queue_name)] == [
        ("test_task:a", "test_task", ["one"]),
        ("test_task:b", "test_task", ["two"]),
    ]
    assert await arq_storage.is_live(redis, "test_task:a")

    await drain(settings)

    answer = await arq_storage.status(redis, settings.queue_name, "test_task:b")
    assert answer["status"] == JobStatus.complete.value
    assert answer["result"] == {"status": "completed", "message": "two"}
    (finished,) = await arq_storage.results(redis, ["test_task:b", "never-queued"])
    assert (finished.job_id, finished.function, finished.args, finished.success, finished.tries) == (
        "test_task:b",
        "test_task",
        ["two"],
        True,
        1,
    )
    assert finished.result == {"status": "completed", "message": "two"}
    assert finished.enqueued_ms and finished.started_ms and finished.finished_ms
    assert finished.enqueued_ms <= finished.started_ms <= finished.finished_ms
    assert not await arq_storage.is_live(redis, "test_task:b")


async def test_a_job_with_a_kept_result_runs_again_once_its_result_is_forgotten(
    settings: Settings, redis: ArqRedis
) -> None:
    await redis.enqueue_job("test_task", "first", _job_id="test_task:same")
    await drain(settings)
    assert await redis.enqueue_job("test_task", "second", _job_id="test_task:same") is None, "arq keeps the result"

    await arq_storage.forget_result(redis, "test_task:same")

    assert await redis.enqueue_job("test_task", "second", _job_id="test_task:same") is not None


async def test_args_of_and_drop_read_and_remove_what_arq_enqueued(settings: Settings, redis: ArqRedis) -> None:
    await redis.enqueue_job("test_task", "kept", _job_id="test_task:kept")
    await redis.enqueue_job("test_task", "dropped", _job_id="test_task:dropped")
    assert await arq_storage.args_of(redis, ["test_task:kept", "test_task:dropped"]) == [["kept"], ["dropped"]]

    await arq_storage.drop(redis, settings.queue_name, ["test_task:dropped"])

    assert await arq_storage.queued_ids(redis, settings.queue_name) == ["test_task:kept"]
    assert (await arq_storage.status(redis, settings.queue_name, "test_task:dropped"))["status"] == "not_found"
    await drain(settings)
    assert (await arq_storage.status(redis, settings.queue_name, "test_task:kept"))["result"]["message"] == "kept"


async def test_an_in_progress_mark_keeps_arq_from_starting_the_job(settings: Settings, redis: ArqRedis) -> None:
    """The inline chain holds a stage job's in-progress mark; arq must then leave that job queued, not run it."""
    assert await arq_storage.hold_in_progress(redis, "test_task:held", ms=60_000)
    assert not await arq_storage.hold_in_progress(redis, "test_task:held", ms=60_000), "one holder at a time"
    await redis.enqueue_job("test_task", "held", _job_id="test_task:held")
    assert (await arq_storage.status(redis, settings.queue_name, "test_task:held"))["status"] == "in_progress"

    await arq_storage.release_in_progress(redis, "test_task:held")
    await drain(settings)

    assert (await arq_storage.status(redis, settings.queue_name, "test_task:held"))["status"] == "complete"
