"""The batch worker keeps every per-email guarantee: failures stay with their email, grants keep their rate,
several notifications of one message cost one fetch, and a stopped batch gives its events back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from db import stage_runs
from jobs.context import JobContext
from jobs.pump import Pump
from jobs.worker import PUMP_KEY, shutdown, startup
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.harness import drain, poll_until, running_api
from tests.notifications import envelope, message, post, truncated


async def as_one_batch(
    api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], payloads: Sequence[dict[str, Any]]
) -> list[int]:
    """Store the notifications while no worker runs: the worker's first claim takes them all, as one batch."""
    ids = [(await post(api, payload)).json()["event_id"] for payload in payloads]
    assert {e.status for e in await helpers.events(sessionmaker)} == {"received"}
    return ids


def fetch_notice(message_id: str, *, grant_id: str = "grant_1", **fields: Any) -> dict[str, Any]:
    return envelope(
        truncated(message(grant_id=grant_id, message_id=message_id, **fields)), type="message.created.truncated"
    )


async def process_runs(sessionmaker: async_sessionmaker[AsyncSession], event_id: int) -> list[str]:
    async with sessionmaker() as session:
        runs = await stage_runs.timeline(session, email_id=None, event_id=event_id)
    return [run.status for run in runs if run.stage == "process"]


@pytest.mark.parametrize("fetch", ["http", "sdk"])
async def test_one_bad_email_in_a_batch_fails_alone(
    fetch: str,
    settings: Settings,
    api: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_nylas: FakeNylas,
) -> None:
    for name in ("ok_1", "ok_2", "busy", "broken", "boom"):
        fake_nylas.add_message(message(message_id=name, subject=f"Subject {name}"))
    # A date no datetime can hold: read through the SDK it stays a 100-bit integer nothing can store as JSON.
    fake_nylas.add_message(message(message_id="huge", date=10**30))
    fake_nylas.fail(429, retry_after=0.3, path_contains="/messages/busy")
    fake_nylas.fail(500, times=99, path_contains="/messages/broken")
    ids = await as_one_batch(
        api,
        sessionmaker,
        [fetch_notice(m) for m in ("ok_1", "gone", "busy", "broken", "boom", "huge", "ok_2")],
    )

    await drain(settings.model_copy(update={"nylas_fetch": fetch, "classifier": "tests.classifiers:exploding"}))

    by_message = {e.message_id: e for e in await helpers.emails(sessionmaker)}
    assert by_message["ok_1"].pipeline_state == by_message["ok_2"].pipeline_state == "done"
    assert by_message["gone"].pipeline_state == "missing", "a 404: the message is gone, nothing more to do"
    assert by_message["busy"].pipeline_state == "done", "a 429 waited for Retry-After, then went through"
    busy = fake_nylas.requests_to("/messages/busy")
    assert busy[1].at - busy[0].at >= 0.3
    assert "broken" not in by_message, "a 500 every time: the event's tries run out"
    assert by_message["boom"].classification is None and by_message["boom"].dead_at is not None
    statuses = {e.object_id: e.status for e in await helpers.events(sessionmaker)}
    assert statuses["broken"] == "dead"
    if fetch == "sdk":
        assert "huge" not in by_message and statuses["huge"] == "dead"
    else:
        assert by_message["huge"].date is None and by_message["huge"].pipeline_state == "done"
    # Each failure has the per-event timeline a job of its own would have written.
    event_of = dict(zip(("ok_1", "gone", "busy", "broken", "boom", "huge", "ok_2"), ids, strict=True))
    assert await process_runs(sessionmaker, event_of["busy"]) == ["retrying", "succeeded"]
    assert await process_runs(sessionmaker, event_of["broken"]) == ["retrying", "retrying", "dead"]
    assert await process_runs(sessionmaker, event_of["gone"]) == ["skipped"]
    assert await process_runs(sessionmaker, event_of["ok_1"]) == ["succeeded"]


async def test_a_hot_grant_keeps_its_rate_and_does_not_hold_up_the_others(
    settings: Settings,
    api: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_nylas: FakeNylas,
) -> None:
    fake_nylas.any_message = True
    hot = [fetch_notice(f"hot_{n}", grant_id="grant_hot") for n in range(6)]
    cold = [fetch_notice(f"cold_{n}", grant_id="grant_cold") for n in range(2)]
    await as_one_batch(api, sessionmaker, hot + cold)

    await drain(settings.model_copy(update={"nylas_rate_per_grant": 2}))

    assert len(await helpers.emails(sessionmaker)) == 8
    hot_calls = sorted(r.at for r in fake_nylas.requests_to("/grants/grant_hot/messages/"))
    cold_calls = sorted(r.at for r in fake_nylas.requests_to("/grants/grant_cold/messages/"))
    assert len(hot_calls) == 6 and len(cold_calls) == 2
    first_window = [t for t in hot_calls if t < hot_calls[0] + 1.0]
    assert len(first_window) == 2, "no more than the grant's rate in its first second"
    assert hot_calls[-1] - hot_calls[0] >= 1.5, "six calls at two a second span three windows"
    assert cold_calls[-1] - hot_calls[0] < 0.5, "the other grant was fetched at once"


async def test_notifications_of_one_message_in_a_batch_fetch_it_once(
    settings: Settings,
    api: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_nylas: FakeNylas,
) -> None:
    """`message.created`, then `message.updated` three times (as Google and Microsoft send them): one fetch."""
    fake_nylas.add_message(message(subject="fourth version"))
    fake_nylas.add_message(message(message_id="other"))
    notices = [fetch_notice("msg_1")] + [
        envelope(truncated(message()), type="message.updated.truncated", time=1723821990 + n) for n in range(3)
    ]
    ids = await as_one_batch(api, sessionmaker, [*notices, fetch_notice("other")])

    await drain(settings)

    assert len(fake_nylas.requests_to("/messages/msg_1")) == 1
    (email, _) = sorted(await helpers.emails(sessionmaker), key=lambda e: e.message_id)
    assert (email.message_id, email.subject) == ("msg_1", "fourth version")
    assert email.state_at.timestamp() == 1723821992, "the newest notification's time"
    assert {e.status for e in await helpers.events(sessionmaker)} == {"processed"}
    async with sessionmaker() as session:
        runs = await stage_runs.timeline(session, email_id=email.id, event_id=None)
    coalesced = [r for r in runs if r.stage == "process"]
    assert sorted(r.event_id or 0 for r in coalesced) == ids[:4]
    assert all(r.detail and r.detail["coalesced"] == 4 for r in coalesced)
    assert "mailroom_nylas_fetches_saved_total 3.0" in (await api.get("/metrics")).text


async def test_complete_notifications_of_one_message_store_the_newest_without_a_fetch(
    settings: Settings,
    api: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_nylas: FakeNylas,
) -> None:
    await as_one_batch(
        api,
        sessionmaker,
        [
            envelope(message(subject="first"), time=1000),
            envelope(message(subject="newest"), type="message.updated", time=1002),
            envelope(message(subject="late"), type="message.updated", time=1001),
        ],
    )

    await drain(settings)

    (email,) = await helpers.emails(sessionmaker)
    assert email.subject == "newest"
    assert fake_nylas.requests_to("/messages/") == []


async def test_a_batch_stopped_midway_gives_its_events_back_untried(
    settings: Settings,
    api: httpx.AsyncClient,
    redis: ArqRedis,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_nylas: FakeNylas,
) -> None:
    """SIGTERM: the batch under way has the shutdown grace to finish; past it, its claimed events wait again
    (`received`, for the next worker's claim), their try not spent."""
    fake_nylas.any_message = True
    fake_nylas.latency = 30
    await as_one_batch(api, sessionmaker, [fetch_notice(f"m{n}") for n in range(3)])
    ctx: dict[str, Any] = {"settings": settings.model_copy(update={"shutdown_grace_seconds": 0.2}), "redis": redis}
    await startup(ctx)
    try:
        await poll_until(lambda: len(fake_nylas.requests_to("/messages/")) == 3, what="the fetches to start")
        assert {(e.status, e.attempts) for e in await helpers.events(sessionmaker)} == {("processing", 1)}
    finally:
        await shutdown(ctx)
        fake_nylas.latency = 0

    assert {(e.status, e.attempts) for e in await helpers.events(sessionmaker)} == {("received", 0)}
    await drain(settings)
    assert {(e.status, e.attempts) for e in await helpers.events(sessionmaker)} == {("processed", 1)}


async def test_a_lone_notification_wakes_an_idle_worker_at_once(
    settings: Settings,
    api: httpx.AsyncClient,
    redis: ArqRedis,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_nylas: FakeNylas,
) -> None:
    """The API's NOTIFY wakes a runner: nothing waits for a batch to fill, nor for a poll (here an hour apart)."""
    fake_nylas.add_message(message())
    ctx: dict[str, Any] = {"settings": settings, "redis": redis}
    await startup(ctx)
    pump = ctx[PUMP_KEY]
    await pump.aclose()  # the one started with the worker polls every second: replace it with a patient one
    ctx[PUMP_KEY] = Pump(JobContext.from_ctx(ctx), listening_poll_s=3600)
    await ctx[PUMP_KEY].start(ctx)
    try:
        await post(api, fetch_notice("msg_1"))

        async def processed() -> bool:
            return [e.status for e in await helpers.events(sessionmaker)] == ["processed"]

        deadline = asyncio.get_running_loop().time() + 10
        while not await processed():
            assert asyncio.get_running_loop().time() < deadline, "no runner woke for the notification"
            await asyncio.sleep(0.02)
    finally:
        await shutdown(ctx)


async def test_a_worker_claims_no_more_than_its_connections_can_fetch_soon(
    settings: Settings,
    api: httpx.AsyncClient,
    redis: ArqRedis,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_nylas: FakeNylas,
) -> None:
    """One connection: at most four events claimed at once, the rest left waiting for any other worker."""
    fake_nylas.any_message = True
    fake_nylas.latency = 30
    await as_one_batch(api, sessionmaker, [fetch_notice(f"m{n}") for n in range(10)])
    ctx: dict[str, Any] = {"settings": settings.model_copy(update={"nylas_connections": 1}), "redis": redis}
    await startup(ctx)
    try:
        await poll_until(lambda: len(fake_nylas.requests_to("/messages/")) == 1, what="the first fetch")
        statuses = [e.status for e in await helpers.events(sessionmaker)]
        assert (statuses.count("processing"), statuses.count("received")) == (4, 6)
    finally:
        fake_nylas.latency = 0
        await shutdown(ctx)
    await drain(settings)
    assert {e.status for e in await helpers.events(sessionmaker)} == {"processed"}


async def test_with_batches_off_each_event_is_a_job_of_its_own(
    settings: Settings, redis: ArqRedis, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    fake_nylas.add_message(message())
    per_event = settings.model_copy(update={"batch_worker": False})
    async with running_api(per_event) as api:
        await post(api, fetch_notice("msg_1"))
        assert await helpers.queued_job_ids(redis) == ["process_event:1"]

    await drain(per_event)

    (email,) = await helpers.emails(sessionmaker)
    assert email.pipeline_state == "done"
