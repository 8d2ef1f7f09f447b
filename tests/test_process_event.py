"""The worker: from a stored notification to an email row (or grant state), through the real SDK when needed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobs import arq_storage
from jobs.enqueue import enqueue_process_event
from mailroom.fake_nylas import API_KEY, FakeNylas
from tests import helpers
from tests.notifications import envelope, grant_object, message, post, truncated

Drain = Callable[[], Awaitable[None]]


async def test_webhook_becomes_an_email_row(
    api: httpx.AsyncClient, run_worker: Drain, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    """POST → event row → arq job → worker → email row, with the payload's message used as is."""
    response = await post(api, envelope(message(subject="Invoice 42")))
    assert response.json()["status"] == "queued"

    await run_worker()

    (email,) = await helpers.emails(sessionmaker)
    assert (email.grant_id, email.message_id, email.subject) == ("grant_1", "msg_1", "Invoice 42")
    assert email.from_email == "ana@example.com"
    assert email.body == "<div>Please find...</div>"
    assert email.folders == ["INBOX"]
    assert email.unread is True
    assert email.date is not None and email.date.timestamp() == 1723821981
    (event,) = await helpers.events(sessionmaker)
    assert (event.status, event.attempts) == ("processed", 1)
    assert event.processed_at is not None
    assert [r for r in fake_nylas.requests if r.method == "GET"] == [], "a complete payload needs no fetch"
    grant = await helpers.grant(sessionmaker, "grant_1")
    assert grant is not None and grant.status == "active"


async def test_duplicate_delivery_makes_one_email(
    api: httpx.AsyncClient, run_worker: Drain, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    for attempt in (1, 2, 3):
        await post(api, envelope(message(), notification_id="evt_same", attempt=attempt))
    # The same message under another notification id (created, then updated): still one email.
    await post(api, envelope(message(), type="message.updated", time=1723821999))

    await run_worker()

    assert len(await helpers.emails(sessionmaker)) == 1
    assert [e.status for e in await helpers.events(sessionmaker)] == ["processed", "processed"]


async def test_older_update_never_overwrites_a_newer_state(
    api: httpx.AsyncClient, run_worker: Drain, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Nylas does not deliver in order: the state from the latest notification `time` wins."""
    await post(api, envelope(message(subject="new", unread=False), type="message.updated", time=2000))
    await run_worker()
    await post(api, envelope(message(subject="old", unread=True), type="message.created", time=1000))
    await run_worker()

    (email,) = await helpers.emails(sessionmaker)
    assert (email.subject, email.unread) == ("new", False)
    assert email.state_at.timestamp() == 2000
    assert [e.status for e in await helpers.events(sessionmaker)] == ["processed", "processed"]


async def test_newer_update_does_overwrite(
    api: httpx.AsyncClient, run_worker: Drain, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await post(api, envelope(message(subject="first", folders=["INBOX"]), time=1000))
    await run_worker()
    await post(api, envelope(message(subject="moved", folders=["Archive"]), type="message.updated", time=2000))
    await run_worker()

    (email,) = await helpers.emails(sessionmaker)
    assert (email.subject, email.folders) == ("moved", ["Archive"])


async def test_truncated_notification_fetches_the_message_through_the_sdk(
    api: httpx.AsyncClient, run_worker: Drain, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    full = fake_nylas.add_message(message(message_id="msg/big+1=", body="<p>the whole body</p>"))
    await post(api, envelope(truncated(full), type="message.created.truncated"))

    await run_worker()

    (email,) = await helpers.emails(sessionmaker)
    assert email.message_id == "msg/big+1="
    assert email.body == "<p>the whole body</p>"
    (request,) = [r for r in fake_nylas.requests if r.method == "GET"]
    # The SDK encodes the id in the path, authenticates with the key, and identifies itself.
    assert request.path.startswith("/v3/grants/grant_1/messages/")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["x-nylas-api-wrapper"] == "python"


async def test_id_only_object_is_fetched(
    api: httpx.AsyncClient, run_worker: Drain, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    fake_nylas.add_message(message(message_id="msg_2", subject="fetched"))
    await post(api, envelope({"object": "message", "id": "msg_2", "grant_id": "grant_1"}, type="message.updated"))

    await run_worker()

    (email,) = await helpers.emails(sessionmaker)
    assert email.subject == "fetched"
    assert len(fake_nylas.requests_to("/messages/msg_2")) == 1


async def test_rerun_of_a_processed_event_changes_nothing(
    api: httpx.AsyncClient,
    run_worker: Drain,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_nylas: FakeNylas,
    redis: ArqRedis,
) -> None:
    """arq may run a job twice (a worker dies after the commit); the second run is a no-op."""
    fake_nylas.add_message(message())
    event_id = (await post(api, envelope(truncated(message()), type="message.created.truncated"))).json()["event_id"]
    await run_worker()
    before = await helpers.emails(sessionmaker)

    await arq_storage.forget_result(redis, f"process_event:{event_id}")
    assert await enqueue_process_event(redis, event_id) is not None
    await run_worker()

    after = await helpers.emails(sessionmaker)
    assert [(e.id, e.updated_at) for e in after] == [(e.id, e.updated_at) for e in before]
    (event,) = await helpers.events(sessionmaker)
    assert (event.status, event.attempts) == ("processed", 1)
    assert len([r for r in fake_nylas.requests if r.method == "GET"]) == 1


async def test_transient_nylas_errors_are_retried_until_success(
    api: httpx.AsyncClient, run_worker: Drain, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    fake_nylas.add_message(message())
    fake_nylas.fail(429, retry_after=0)
    fake_nylas.fail(502, html=True)
    await post(api, envelope(truncated(message()), type="message.created.truncated"))

    await run_worker()

    (event,) = await helpers.events(sessionmaker)
    assert (event.status, event.attempts) == ("processed", 3)
    assert len(await helpers.emails(sessionmaker)) == 1


async def test_message_gone_at_nylas_is_marked_missing_without_retrying(
    api: httpx.AsyncClient, run_worker: Drain, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    """404 is terminal: the message was deleted or moved out of reach; the email says so and the chain stops."""
    await post(api, envelope(truncated(message(message_id="msg_gone")), type="message.created.truncated"))

    await run_worker()

    (event,) = await helpers.events(sessionmaker)
    assert (event.status, event.attempts) == ("processed", 1)
    (email,) = await helpers.emails(sessionmaker)
    assert (email.message_id, email.pipeline_state) == ("msg_gone", "missing")
    assert email.missing_at is not None
    assert len(fake_nylas.requests) == 1


async def test_tries_run_out_on_persistent_5xx(
    api: httpx.AsyncClient, run_worker: Drain, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    fake_nylas.add_message(message())
    fake_nylas.fail(503, times=10)
    await post(api, envelope(truncated(message()), type="message.created.truncated"))

    await run_worker()

    (event,) = await helpers.events(sessionmaker)
    assert (event.status, event.attempts) == ("dead", 3)
    assert len(fake_nylas.requests) == 3


async def test_deletion_leaves_a_tombstone_an_older_create_cannot_revive(
    api: httpx.AsyncClient, run_worker: Drain, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    deleted = {"object": "message", "id": "msg_1", "grant_id": "grant_1"}
    await post(api, envelope(deleted, type="message.deleted", time=2000))
    await run_worker()
    await post(api, envelope(message(), type="message.created", time=1000))
    await run_worker()

    (email,) = await helpers.emails(sessionmaker)
    assert email.deleted_at is not None and email.deleted_at.timestamp() == 2000
    assert email.subject is None


async def test_grant_notifications_update_the_grant(
    api: httpx.AsyncClient, run_worker: Drain, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await post(api, envelope(grant_object(email="me@example.org"), type="grant.expired", time=1000))
    await run_worker()
    grant = await helpers.grant(sessionmaker, "grant_1")
    assert grant is not None and (grant.status, grant.email, grant.provider) == ("expired", "me@example.org", "google")

    await post(api, envelope(grant_object(code=25014), type="grant.updated", time=2000))
    await post(api, envelope(grant_object(), type="grant.expired", time=1500))  # late, older: no effect
    await run_worker()
    grant = await helpers.grant(sessionmaker, "grant_1")
    assert grant is not None and grant.status == "active"

    await post(api, envelope(grant_object(code=25013), type="grant.deleted", time=3000))
    await run_worker()
    grant = await helpers.grant(sessionmaker, "grant_1")
    assert grant is not None and grant.status == "deleted"
