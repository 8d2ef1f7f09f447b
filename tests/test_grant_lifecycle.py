"""Grants: refused credentials and grant.expired park work; grant.updated resumes and backfills; deleted stops."""

from __future__ import annotations

import time

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.harness import drain
from tests.notifications import envelope, grant_object, message, post, truncated


async def test_401_pauses_the_grant_and_grant_updated_resumes_it(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    now = int(time.time())
    fake_nylas.add_message(message(message_id="m1", date=now))
    fake_nylas.add_message(message(message_id="m2", date=now))
    fake_nylas.fail(401, path_contains="/messages/m1")
    await post(api, envelope(truncated(message(message_id="m1")), type="message.created.truncated", time=now))
    await drain(settings)

    grant = await helpers.grant(sessionmaker, "grant_1")
    assert grant is not None and grant.paused_at is not None and "401" in (grant.paused_reason or "")
    (event,) = await helpers.events(sessionmaker)
    assert event.status == "parked"

    # While paused, new work for the grant is parked without calling Nylas.
    calls = len(fake_nylas.requests)
    await post(api, envelope(truncated(message(message_id="m2")), type="message.created.truncated", time=now))
    await drain(settings)
    assert len(fake_nylas.requests) == calls
    assert [e.status for e in await helpers.events(sessionmaker)] == ["parked", "parked"]

    await post(api, envelope(grant_object(code=25027, reauthentication_flag=True), type="grant.updated", time=now + 1))
    await drain(settings)

    grant = await helpers.grant(sessionmaker, "grant_1")
    assert grant is not None and (grant.status, grant.paused_at) == ("active", None)
    assert [e.status for e in await helpers.events(sessionmaker)] == ["processed", "processed", "processed"]
    assert {e.message_id for e in await helpers.emails(sessionmaker)} == {"m1", "m2"}
    assert fake_nylas.requests_to("/grants/grant_1/messages") and any(
        "received_after" in r.query for r in fake_nylas.requests_to("/grants/grant_1/messages")
    ), "the pause was backfilled by listing messages since it began"


async def test_grant_expired_parks_fetches_until_grant_updated(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    fake_nylas.add_message(message())
    await post(api, envelope(grant_object(), type="grant.expired", time=1000))
    await drain(settings)
    await post(api, envelope(truncated(message()), type="message.created.truncated", time=1001))
    await drain(settings)
    assert [e.status for e in await helpers.events(sessionmaker)] == ["processed", "parked"]
    assert fake_nylas.requests == []

    await post(api, envelope(grant_object(code=25014), type="grant.updated", time=1002))
    await drain(settings)

    assert [e.status for e in await helpers.events(sessionmaker)] == ["processed", "processed", "processed"]
    (email,) = await helpers.emails(sessionmaker)
    assert email.body == "<div>Please find...</div>"


async def test_grant_deleted_stops_its_work(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    await post(api, envelope(grant_object(), type="grant.expired", time=1000))
    await drain(settings)
    await post(api, envelope(truncated(message()), type="message.created.truncated", time=1001))
    await drain(settings)
    await post(api, envelope(grant_object(code=25013), type="grant.deleted", time=1003))
    await drain(settings)

    grant = await helpers.grant(sessionmaker, "grant_1")
    assert grant is not None and grant.status == "deleted" and grant.deleted_at is not None
    statuses = [(e.type, e.status) for e in await helpers.events(sessionmaker)]
    assert statuses == [
        ("grant.expired", "processed"),
        ("message.created.truncated", "ignored"),
        ("grant.deleted", "processed"),
    ]
    assert fake_nylas.requests == []
