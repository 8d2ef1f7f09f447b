"""The right to be forgotten: the body is stored once, and grant.deleted, message.deleted, an erasure request and
retention remove mail content from every table while ids, states and counts stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from db.erasure import EMAIL_CONTENT
from db.models import Action, Email, WebhookEvent
from jobs.sweep import erase_expired
from jobs.worker import build_context, close_context
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.commands import mailroom
from tests.harness import drain, running_api
from tests.notifications import envelope, grant_object, message, post

TOKEN = "privacy-test-admin-token"


async def rows(sessionmaker: async_sessionmaker[AsyncSession], model: Any) -> list[Any]:
    async with sessionmaker() as session:
        return list((await session.execute(select(model).order_by(model.id))).scalars())


async def mail_for(api: httpx.AsyncClient, fake: FakeNylas, grant_id: str) -> None:
    """Two emails for a grant, one urgent (so act stars it and drafts a reply: actions whose params and results
    carry text)."""
    for suffix, subject in (("a", "Lunch"), ("b", "Urgent: contract")):
        mail = message(grant_id=grant_id, message_id=f"{grant_id}-{suffix}", subject=subject, body=f"<p>{subject}</p>")
        fake.add_message(mail)
        await post(api, envelope(mail))


def holds_content(email: Email) -> bool:
    return any(getattr(email, column) not in (None, [], {}) for column in EMAIL_CONTENT)


async def test_the_body_is_stored_once(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """In emails.body only: not in emails.raw, not in the processed notification; classify still reads it."""
    rules = tmp_path / "rules.toml"
    rules.write_text(
        'default_class = "personal"\n[[rules]]\nname = "q"\nclass = "finance"\nbody_keywords = ["quarterly"]\n'
    )
    settings = settings.model_copy(update={"rules_file": rules})
    await post(api, envelope(message(subject="Numbers", body="<p>The quarterly report</p>")))
    await drain(settings)
    (email,) = await helpers.emails(sessionmaker)
    assert email.body == "<p>The quarterly report</p>"
    assert email.raw is not None and "body" not in email.raw and email.raw["subject"] == "Numbers"
    assert email.classification == "finance", "classify read the body"
    (event,) = await helpers.events(sessionmaker)
    assert event.status == "processed" and "body" not in event.payload["data"]["object"]


async def test_grant_deleted_erases_the_grants_content_everywhere(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    await mail_for(api, fake_nylas, "leaving")
    await mail_for(api, fake_nylas, "staying")
    await drain(settings)
    actions_before = await rows(sessionmaker, Action)
    assert {a.grant_id for a in actions_before if a.kind == "draft_reply"} == {"leaving", "staying"}

    await post(api, envelope(grant_object(grant_id="leaving", code=25013), type="grant.deleted"))
    await drain(settings)

    leaving = [e for e in await helpers.emails(sessionmaker) if e.grant_id == "leaving"]
    assert len(leaving) == 2, "the rows (ids and counts) stay"
    assert [holds_content(e) for e in leaving] == [False, False]
    assert all(e.erased_at is not None and e.message_id and e.classification for e in leaving)
    staying = [e for e in await helpers.emails(sessionmaker) if e.grant_id == "staying"]
    assert [holds_content(e) for e in staying] == [True, True], "another grant's mail is untouched"

    events = [e for e in await rows(sessionmaker, WebhookEvent) if e.grant_id == "leaving"]
    message_events = [e for e in events if e.type == "message.created"]
    assert [set(e.payload["data"]["object"]) for e in message_events] == [{"id", "grant_id", "object"}] * 2
    assert all(e.notification_id for e in events), "notification ids stay, so a late retry is still a duplicate"
    for action in await rows(sessionmaker, Action):
        if action.grant_id == "leaving":
            assert action.params == {} and set(action.result or {}) <= {"id"}, action.kind
        else:
            assert action.params or action.kind in ("mark_read", "star"), action.kind
    grant = await helpers.grant(sessionmaker, "leaving")
    assert grant is not None and grant.email is None


async def test_message_deleted_erases_that_message_only(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    await mail_for(api, fake_nylas, "g1")
    await drain(settings)
    await post(api, envelope({"id": "g1-a", "grant_id": "g1", "object": "message"}, type="message.deleted"))
    await drain(settings)
    by_id = {e.message_id: e for e in await helpers.emails(sessionmaker)}
    assert by_id["g1-a"].pipeline_state == "deleted" and not holds_content(by_id["g1-a"])
    assert holds_content(by_id["g1-b"])
    created = [
        e for e in await rows(sessionmaker, WebhookEvent) if e.object_id == "g1-a" and e.type == "message.created"
    ]
    assert [set(e.payload["data"]["object"]) for e in created] == [{"id", "grant_id", "object"}]


async def test_an_erasure_request_from_the_cli_and_the_admin_api(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    await mail_for(api, fake_nylas, "g1")
    await mail_for(api, fake_nylas, "g2")
    await drain(settings)

    code, out, err = await mailroom(settings, "erase", "--grant", "g1", "--dry-run")
    assert code == 0, err
    assert "grant g1: 2 emails, 2 notifications and 1 actions hold content" in out and "nothing erased" in out
    assert all(holds_content(e) for e in await helpers.emails(sessionmaker))

    code, out, err = await mailroom(settings, "erase", "--grant", "g1", "--yes")
    assert code == 0, err
    assert "erased 2 emails, 2 notifications and 1 actions" in out
    held = {e.message_id: holds_content(e) for e in await helpers.emails(sessionmaker)}
    assert held == {"g1-a": False, "g1-b": False, "g2-a": True, "g2-b": True}

    admin = settings.model_copy(update={"admin_token": SecretStr(TOKEN)})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running_api(admin) as client:
        counted = await client.post("/erase", json={"grant": "g2"}, headers=auth)
        assert counted.json() == {"dry_run": True, "grant": "g2", "emails": 2, "events": 2, "actions": 1}
        assert (await client.post("/erase", json={"grant": "g2", "dry_run": False}, headers=auth)).status_code == 200
        assert (await client.post("/erase", json={"grant": "g2"}, headers=auth)).json()["emails"] == 0
        assert (await client.post("/erase", json={"grnat": "g2"}, headers=auth)).status_code == 400
    assert not any(holds_content(e) for e in await helpers.emails(sessionmaker))


async def test_retention_erases_old_content_and_deduplication_still_holds(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], redis: Any
) -> None:
    old = envelope(message(message_id="old", subject="Old news"), notification_id="evt_old")
    await post(api, old)
    await post(api, envelope(message(message_id="new", subject="Fresh"), notification_id="evt_new"))
    await drain(settings)
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    async with sessionmaker() as session, session.begin():
        await session.execute(update(Email).where(Email.message_id == "old").values(created_at=three_days_ago))
        await session.execute(
            update(WebhookEvent).where(WebhookEvent.object_id == "old").values(received_at=three_days_ago)
        )

    jc = build_context(settings.model_copy(update={"retention_days": 2}), redis)
    try:
        found = await erase_expired(jc)
    finally:
        await close_context(jc)
    assert found == {"erased_emails": 1, "erased_events": 1}
    by_id = {e.message_id: e for e in await helpers.emails(sessionmaker)}
    assert not holds_content(by_id["old"]) and holds_content(by_id["new"])
    again = await post(api, old)
    assert again.json()["status"] == "duplicate", "the notification id outlives its content"


async def test_mail_arriving_after_grant_deleted_is_not_stored(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    await post(api, envelope(grant_object(grant_id="gone", code=25013), type="grant.deleted"))
    await drain(settings)
    late = message(grant_id="gone", message_id="late", subject="Still here?", body="<p>content</p>")
    answer = await post(api, envelope(late))
    assert answer.json()["status"] == "queued"
    await drain(settings)
    assert [e.message_id for e in await helpers.emails(sessionmaker)] == []
    (event,) = [e for e in await rows(sessionmaker, WebhookEvent) if e.type == "message.created"]
    assert event.status == "processed" and set(event.payload["data"]["object"]) == {"id", "grant_id", "object"}
