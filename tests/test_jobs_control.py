"""Cancelling a waiting job: it leaves the queue, what it stood for is marked so that no sweep brings it back, and a
replay does; a running or unknown job is refused, saying why."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import orjson
from arq.connections import ArqRedis
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from db import webhook_events
from db.models import StageRun
from jobs import arq_storage
from jobs.context import JobContext
from jobs.enqueue import enqueue_stage
from jobs.heartbeat import finished_ids
from jobs.worker import close_worker, create_worker
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.commands import mailroom
from tests.harness import api_in_process, drain, poll_until
from tests.notifications import envelope, message, post, truncated
from tests.scenarios import urgent_email_waiting_at_act

TOKEN = "jobs-admin-token-00000001"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_a_queued_event_job_cancelled_stays_cancelled_until_replayed(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
) -> None:
    settings = settings.model_copy(update={"batch_worker": False, "admin_token": SecretStr(TOKEN)})
    async with api_in_process(settings) as client:
        await post(client, envelope(message(subject="Lunch")))
        (job,) = (await client.get("/jobs", headers=AUTH)).json()["jobs"]
        assert (job["job_id"], job["function"], job["args"]) == ("process_event:1", "process_event", [1])
        cancelled = await client.post("/jobs/process_event:1/cancel", headers=AUTH)
        assert cancelled.json() == {"job_id": "process_event:1", "was": "queued", "marked": 1}
        assert (await client.get("/jobs", headers=AUTH)).json()["jobs"] == []
        again = await client.post("/jobs/process_event:1/cancel", headers=AUTH)
        assert again.status_code == 409 and "not found" in again.json()["detail"]
    (event,) = await helpers.events(sessionmaker)
    assert event.status == "purged"
    swept = await helpers.sweep_now(settings, redis)
    assert swept["events_requeued"] == 0, "no sweep brings a cancelled job's event back"

    code, _, err = await mailroom(settings, "replay", "--purged", env={"MAILROOM_BATCH_WORKER": "false"})
    assert code == 0, err
    await drain(settings)
    (event,) = await helpers.events(sessionmaker)
    assert event.status == "processed"


async def test_a_deferred_stage_job_cancelled_leaves_its_email_dead_and_replayable(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis, fake_nylas: FakeNylas
) -> None:
    await urgent_email_waiting_at_act(settings, fake_nylas)
    (email,) = await helpers.emails(sessionmaker)
    await enqueue_stage(redis, "act", email.id, defer_ms=60_000)  # a retry waiting for its turn

    code, out, err = await mailroom(settings, "cancel", f"act:{email.id}")
    assert code == 0 and f"cancelled act:{email.id} (it was deferred)" in out, err
    (email,) = await helpers.emails(sessionmaker)
    assert email.dead_at is not None and email.last_error == "cancelled by an operator"
    code, out, _ = await mailroom(settings, "resume", "--stage", "act")
    assert "0 waiting emails" in out, "a cancelled email does not come back with the resume"
    code, _, err = await mailroom(settings, "cancel", "act:999999")
    assert code != 0 and "only a queued or deferred job is cancelled" in err

    code, _, err = await mailroom(settings, "replay", "--email", str(email.id))
    assert code == 0, err
    await drain(settings)
    (email,) = await helpers.emails(sessionmaker)
    assert email.pipeline_state == "done" and fake_nylas.messages[("grant_1", "urgent1")]["starred"] is True
    code, out, _ = await mailroom(settings, "audit", "--json", "--action", "cancel")
    assert [e["filter"] for e in orjson.loads(out)] == [{"job_id": f"act:{email.id}"}]


async def test_the_jobs_view_shows_running_waiting_and_finished_jobs_a_page_at_a_time(
    settings: Settings, redis: ArqRedis
) -> None:
    settings = settings.model_copy(update={"admin_token": SecretStr(TOKEN)})
    for n in range(2):  # two finished jobs, one after the other, their results kept by arq
        await redis.enqueue_job("test_task", f"done-{n}", _job_id=f"done-{n}")
        await drain(settings)
    await redis.enqueue_job("test_task", "slow", _job_id="slow")
    # One job at a time, sleeping long: `slow` runs while everything queued after it waits.
    busy = settings.model_copy(update={"worker_concurrency": 1, "test_task_sleep": 60})
    worker = create_worker(busy, handle_signals=False, poll_delay=0.05, cron_jobs=[])
    running = asyncio.create_task(worker.async_run())
    try:
        await poll_until(lambda: "slow" in worker.tasks, what="the worker to take the slow job")
        for n in range(3):
            await redis.enqueue_job("test_task", f"ready-{n}", _job_id=f"ready-{n}")
        for n in range(2):
            await redis.enqueue_job("test_task", f"later-{n}", _job_id=f"later-{n}", _defer_by=timedelta(minutes=n + 5))
        await JobContext.from_ctx(worker.ctx).heartbeat.beat()  # what a worker runs is told by its heartbeat

        async with api_in_process(settings) as client:
            first = (await client.get("/jobs?limit=4", headers=AUTH)).json()
            second = (await client.get(f"/jobs?limit=4&offset={first['next_offset']}", headers=AUTH)).json()
            only_running = (await client.get("/jobs?state=running", headers=AUTH)).json()["jobs"]
            other = (await client.get("/jobs?function=sync_grant", headers=AUTH)).json()
            bad = await client.get("/jobs?state=stuck", headers=AUTH)

            assert first["total"] == 8 and second["next_offset"] is None
            assert [(j["job_id"], j["state"]) for j in first["jobs"] + second["jobs"]] == [
                ("slow", "in_progress"),
                ("ready-0", "queued"),
                ("ready-1", "queued"),
                ("ready-2", "queued"),
                ("later-0", "deferred"),
                ("later-1", "deferred"),
                ("done-1", "complete"),
                ("done-0", "complete"),
            ]
            (slow,) = only_running
            assert slow["worker"] == JobContext.from_ctx(worker.ctx).heartbeat.name and slow["args"] == ["slow"]
            done = second["jobs"][-1]
            assert (done["success"], done["function"], done["tries"]) == (True, "test_task", 1)
            assert "done-0" in done["result"] and done["took_s"] >= 0
            assert other["jobs"] == [] and other["total"] == 0
            assert bad.status_code == 400

            # Cancel by filter: counted first, nothing changed; then cancelled. The running job is not waiting.
            ask = {"state": "ready", "function": "test_task"}
            counted = (await client.post("/jobs/cancel", json=ask, headers=AUTH)).json()
            assert (counted["matched"], counted["by_function"], counted["dry_run"]) == (3, {"test_task": 3}, True)
            assert len((await client.get("/jobs?state=ready", headers=AUTH)).json()["jobs"]) == 3
            done = (await client.post("/jobs/cancel", json={**ask, "dry_run": False}, headers=AUTH)).json()
            assert done["matched"] == 3
            assert (await client.get("/jobs?state=ready", headers=AUTH)).json()["jobs"] == []
            assert [j["job_id"] for j in (await client.get("/jobs?state=running", headers=AUTH)).json()["jobs"]] == [
                "slow"
            ]
            refused = await client.post("/jobs/cancel", json={"state": "running"}, headers=AUTH)
            assert refused.status_code == 400 and "cannot be cancelled" in refused.text

        code, out, err = await mailroom(settings, "cancel", "--state", "scheduled", "--dry-run")
        assert code == 0 and "2 waiting jobs match: 2 test_task" in out and "nothing cancelled" in out, err
        code, out, err = await mailroom(settings, "cancel", "--state", "scheduled", "--yes")
        assert code == 0 and "cancelled 2 jobs" in out, err
        assert await arq_storage.queued_ids(redis, settings.queue_name) == ["slow"]
        code, out, _ = await mailroom(settings, "audit", "--json", "--action", "cancel")
        assert [(e["filter"], e["rows"]) for e in orjson.loads(out)] == [
            ({"state": "scheduled"}, 2),
            ({"state": "ready", "function": "test_task"}, 3),
        ]
    finally:
        await close_worker(worker)
        await asyncio.gather(running, return_exceptions=True)


async def test_each_worker_says_what_it_finished_and_when_it_last_beat(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas, redis: ArqRedis
) -> None:
    settings = settings.model_copy(update={"admin_token": SecretStr(TOKEN)})
    fake_nylas.fail(404, times=10, path_contains="/messages/gone")
    worker = create_worker(settings, handle_signals=False, poll_delay=0.05, cron_jobs=[])
    running = asyncio.create_task(worker.async_run())
    try:
        async with api_in_process(settings) as client:
            for message_id in ("m1", "m2"):
                await post(client, envelope(message(message_id=message_id, subject="Lunch")))
            await post(client, envelope(truncated(message(message_id="gone")), type="message.created.truncated"))

            async def settled() -> bool:
                return {e.status for e in await helpers.events(sessionmaker)} == {"processed"}

            await poll_until(settled, what="the three events processed (one message gone at Nylas)", within=20)
            heartbeat = JobContext.from_ctx(worker.ctx).heartbeat
            await heartbeat.beat()
            (shown,) = (await client.get("/api/overview", headers=AUTH)).json()["workers"]
        assert shown["name"] == heartbeat.name and shown["beat_at"] > shown["started_at"]
        async with sessionmaker() as session:
            succeeded = await session.scalar(select(func.count()).where(StageRun.status == "succeeded"))
        assert shown["stage_runs"] == {"succeeded": succeeded, "missing": 1}, "what PostgreSQL's stage runs say"
    finally:
        await close_worker(worker)
        await asyncio.gather(running, return_exceptions=True)
    # Batches are not arq jobs and keep no result: they take no place in the recently finished.
    assert not [job_id for job_id in await finished_ids(redis, settings.queue_name) if job_id.startswith("batch:")]


async def test_cancel_by_grant_error_and_time_takes_only_the_jobs_whose_work_matches(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
) -> None:
    per_event = settings.model_copy(update={"batch_worker": False, "admin_token": SecretStr(TOKEN)})
    async with api_in_process(per_event) as client:
        for grant in ("grant_1", "grant_2"):
            await post(client, envelope(message(grant_id=grant, message_id=f"m-{grant}", subject="Lunch")))
        # Each failed a first try the way a worker records it, grant_1's with a 503; their retries wait in the queue.
        for event_id, error in ((1, "TransientError: Nylas answered 503"), (2, "TransientError: timed out")):
            async with sessionmaker.begin() as session:
                await webhook_events.start_processing(session, event_id)
                await webhook_events.mark_attempt_failed(session, event_id, error=error, final=False)

        async def matched(**chosen: Any) -> int:
            answer = await client.post("/jobs/cancel", json=chosen, headers=AUTH)
            assert answer.status_code == 200, answer.text
            return int(answer.json()["matched"])

        assert await matched(grant="grant_1") == 1
        listed = (await client.get("/jobs?grant=grant_1&error=503", headers=AUTH)).json()["jobs"]
        assert [job["job_id"] for job in listed] == ["process_event:1"], "the list and the cancel filter alike"
        assert await matched(error="answered 503") == 1
        assert await matched(grant="grant_2", error="503") == 0
        assert await matched(function="process_event", since="2000-01-01T00:00:00Z") == 2
        assert await matched(until="2000-01-01T00:00:00Z") == 0
        bad = await client.post("/jobs/cancel", json={"since": "yesterday"}, headers=AUTH)
        assert bad.status_code == 400 and "ISO 8601" in bad.text
        assert await matched(grant="grant_1", error="503", dry_run=False) == 1
    assert {e.grant_id: e.status for e in await helpers.events(sessionmaker)} == {
        "grant_1": "purged",
        "grant_2": "queued",
    }
    assert await arq_storage.queued_ids(redis, settings.queue_name) == ["process_event:2"]
    _, out, _ = await mailroom(per_event, "audit", "--json", "--action", "cancel")
    assert [e["filter"] for e in orjson.loads(out)] == [{"state": "waiting", "grant": "grant_1", "error": "503"}]
