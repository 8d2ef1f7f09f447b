"""Operators' pauses: a stage (the kill switch for actions), a grant, or everything; every worker holds them, nothing
is lost or retried meanwhile, and resuming goes on where it stopped. Each pause and resume is in the audit trail."""

from __future__ import annotations

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.commands import mailroom
from tests.harness import api_in_process, drain
from tests.notifications import envelope, message, post, truncated
from tests.scenarios import urgent_email_waiting_at_act


async def test_pausing_act_holds_every_action_and_resuming_carries_on(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    code, out, err = await mailroom(settings, "pause", "--stage", "act")
    assert code == 0 and "paused stage act" in out, err
    urgent = fake_nylas.add_message(message(message_id="urgent1", subject="Urgent: sign today"))
    async with api_in_process(settings) as client:
        await post(client, envelope(urgent))
    await drain(settings)
    (email,) = await helpers.emails(sessionmaker)
    assert (email.classification, email.pipeline_state) == ("urgent", "act"), "classified, waiting at act"
    assert fake_nylas.messages[("grant_1", "urgent1")]["starred"] is False, "no action while paused"

    code, out, err = await mailroom(settings, "resume", "--stage", "act")
    assert code == 0 and "1 waiting emails and events queued again" in out, err
    await drain(settings)
    (email,) = await helpers.emails(sessionmaker)
    assert email.pipeline_state == "done"
    assert fake_nylas.messages[("grant_1", "urgent1")]["starred"] is True
    code, out, _ = await mailroom(settings, "audit", "--json")
    assert [e["action"] for e in orjson.loads(out)] == ["resume", "pause"]


async def test_pausing_a_grant_holds_its_notifications_and_no_other(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    code, _, err = await mailroom(settings, "pause", "--grant", "grant_1")
    assert code == 0, err
    async with api_in_process(settings) as client:
        for grant in ("grant_1", "grant_2"):
            await post(client, envelope(message(grant_id=grant, message_id=f"m-{grant}", subject="Lunch")))
    await drain(settings)
    assert {e.grant_id: e.status for e in await helpers.events(sessionmaker)} == {
        "grant_1": "received",
        "grant_2": "processed",
    }
    code, _, err = await mailroom(settings, "resume", "--grant", "grant_1")
    assert code == 0, err
    await drain(settings)
    assert {e.status for e in await helpers.events(sessionmaker)} == {"processed"}


async def test_pausing_everything_holds_per_event_jobs_without_spending_tries(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    per_event = settings.model_copy(update={"batch_worker": False})
    env = {"MAILROOM_BATCH_WORKER": "false"}
    code, _, err = await mailroom(per_event, "pause", "--all", env=env)
    assert code == 0, err
    async with api_in_process(per_event) as client:
        await post(client, envelope(message(subject="Lunch")))
    await drain(per_event)
    (event,) = await helpers.events(sessionmaker)
    assert (event.status, event.attempts) == ("queued", 0), "its job ended as paused: no try spent"

    code, out, err = await mailroom(per_event, "resume", "--all", env=env)
    assert code == 0 and "1 waiting emails and events queued again" in out, err
    await drain(per_event)
    (event,) = await helpers.events(sessionmaker)
    assert event.status == "processed"
    code, out, _ = await mailroom(per_event, "resume", "--all", env=env)
    assert code == 1 and "was not paused" in out


async def test_a_grants_call_rate_changes_at_runtime(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    assert settings.nylas_rate_per_grant == 10, "the default would fetch all six at once"
    code, out, err = await mailroom(settings, "rate", "--grant", "grant_hot", "2")
    assert code == 0 and "grant grant_hot: 2 calls a second" in out, err
    fake_nylas.any_message = True
    async with api_in_process(settings) as client:
        for n in range(6):
            notice = truncated(message(grant_id="grant_hot", message_id=f"hot_{n}"))
            await post(client, envelope(notice, type="message.created.truncated"))
    await drain(settings)
    calls = sorted(r.at for r in fake_nylas.requests_to("/grants/grant_hot/messages/"))
    assert len(calls) == 6 and len([t for t in calls if t < calls[0] + 1.0]) == 2, "two a second, as set"

    code, out, err = await mailroom(settings, "rate", "--grant", "grant_hot", "--default")
    assert code == 0 and "the default, 10 calls a second" in out, err
    code, out, _ = await mailroom(settings, "audit", "--json", "--action", "rate")
    assert [e["filter"] for e in orjson.loads(out)] == [
        {"grant": "grant_hot", "rate": None},
        {"grant": "grant_hot", "rate": 2},
    ]


async def test_a_grant_paused_holds_its_emails_already_past_process(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    """An email of the grant that was classified before the grant's pause waits at act too, and carries on when the
    grant is resumed."""
    await urgent_email_waiting_at_act(settings, fake_nylas)
    code, _, err = await mailroom(settings, "pause", "--grant", "grant_1")
    assert code == 0, err
    code, out, err = await mailroom(settings, "resume", "--stage", "act")
    assert code == 0 and "1 waiting emails and events queued again" in out, err
    await drain(settings)
    (email,) = await helpers.emails(sessionmaker)
    assert (email.pipeline_state, email.dead_at) == ("act", None), "its grant is paused: it waits at act"
    assert fake_nylas.messages[("grant_1", "urgent1")]["starred"] is False

    code, out, err = await mailroom(settings, "resume", "--grant", "grant_1")
    assert code == 0 and "1 waiting emails and events queued again" in out, err
    await drain(settings)
    (email,) = await helpers.emails(sessionmaker)
    assert email.pipeline_state == "done" and fake_nylas.messages[("grant_1", "urgent1")]["starred"] is True
