"""Group commit: concurrent deliveries share transactions and Redis calls; each answer still means "stored"."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import orjson
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from db.webhook_events import NewEvent
from service.event_writer import EventWriter
from tests import helpers
from tests.notifications import envelope, message, post


async def test_a_burst_with_redeliveries_stores_each_notification_once(
    api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
) -> None:
    """60 notifications, each delivered 1-3 times at once: one event and one job per notification, and every
    redelivery is answered `duplicate` with the first delivery's event id."""
    deliveries = [
        envelope(message(message_id=f"m{n}"), notification_id=f"burst-{n}", attempt=attempt)
        for n in range(60)
        for attempt in range(1, 2 + n % 3)
    ]
    responses = await asyncio.gather(*(post(api, payload) for payload in deliveries))

    assert {r.status_code for r in responses} == {200}
    by_notification: dict[str, list[dict[str, object]]] = {}
    for payload, response in zip(deliveries, responses, strict=True):
        by_notification.setdefault(payload["id"], []).append(response.json())
    events = {e.notification_id: e for e in await helpers.events(sessionmaker)}
    assert set(events) == set(by_notification)
    for notification_id, answers in by_notification.items():
        assert {a["event_id"] for a in answers} == {events[notification_id].id}
        assert sorted(str(a["status"]) for a in answers) == ["duplicate"] * (len(answers) - 1) + ["queued"]
    # Each waits once, in PostgreSQL, for a batch worker's claim: nothing goes to Redis.
    assert {e.status for e in events.values()} == {"received"}
    assert await helpers.queued_job_ids(redis) == []


def new_event(notification_id: str, payload_json: str) -> NewEvent:
    return NewEvent(
        notification_id=notification_id,
        type="message.created",
        source=None,
        grant_id="grant_1",
        object_id=notification_id,
        notified_at=datetime.now(UTC),
        delivery_attempt=1,
        payload_json=payload_json,
        status="received",
    )


async def test_a_row_the_database_refuses_fails_alone(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
) -> None:
    """One writer, so all five wait for the same batch; PostgreSQL refuses the one that is not JSON."""
    writer = EventWriter(sessionmaker, redis, max_batch=50, writers=1)
    good = orjson.dumps(envelope(message())).decode()
    writer.start()
    try:
        results = await asyncio.gather(
            *(writer.record(new_event(f"ok-{n}", good)) for n in range(4)),
            writer.record(new_event("bad", "{not json")),
            return_exceptions=True,
        )
    finally:
        await writer.aclose()

    assert [getattr(r, "outcome", r) for r in results[:4]] == ["queued"] * 4
    refused = results[4]
    assert isinstance(refused, Exception) and "json" in str(refused).lower()
    assert "not json" not in str(refused), "bound parameters (email content) stay out of error messages"
    assert sorted(e.notification_id for e in await helpers.events(sessionmaker)) == [f"ok-{n}" for n in range(4)]
