"""Cancelling a waiting job: it leaves the queue, what it stood for is marked so that no sweep brings it back, and a
replay does; a running or unknown job is refused, saying why."""

from __future__ import annotations

import orjson
from arq.connections import ArqRedis
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from jobs.enqueue import enqueue_stage
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.commands import mailroom
from tests.harness import api_in_process, drain
from tests.notifications import envelope, message, post

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
    code, _, err = await mailroom(settings, "pause", "--stage", "act")
    assert code == 0, err
    urgent = fake_nylas.add_message(message(message_id="urgent1", subject="Urgent: sign today"))
    async with api_in_process(settings) as client:
        await post(client, envelope(urgent))
    await drain(settings)
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
