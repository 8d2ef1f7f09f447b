"""Nothing acknowledged is lost when Redis loses jobs; cron ticks run once however many workers run them."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from db.models import StageRun
from jobs.cron import run_once
from jobs.sync import sync_recent_emails
from jobs.worker import build_context, close_context
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.commands import mailroom
from tests.harness import drain, running_api, sweep_ticking_on_two_workers
from tests.notifications import envelope, message, post


@pytest.fixture
def per_event(settings: Settings) -> Settings:
    """Batches off: the API queues a `process_event` job per event in Redis, the path these tests put to the test."""
    return settings.model_copy(update={"batch_worker": False})


@pytest.fixture
async def per_event_api(per_event: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(per_event) as client:
        yield client


async def test_redis_flushed_mid_run_loses_nothing_and_does_nothing_twice(
    per_event: Settings,
    per_event_api: httpx.AsyncClient,
    redis: ArqRedis,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_nylas: FakeNylas,
) -> None:
    settings, api = per_event, per_event_api
    for n in range(20):
        fake_nylas.add_message(message(message_id=f"m{n}", subject="Your invoice"))
        await post(api, envelope(message(message_id=f"m{n}", subject="Your invoice")))
    await drain(settings, max_burst_jobs=15)  # part of the work done, part still queued
    await redis.flushdb()  # Redis restarted empty

    found = await helpers.sweep_now(settings, redis)
    await drain(settings)

    assert found["events_requeued"] + found["emails_requeued"] > 0
    assert [e.status for e in await helpers.events(sessionmaker)] == ["processed"] * 20
    assert [e.pipeline_state for e in await helpers.emails(sessionmaker)] == ["done"] * 20
    async with sessionmaker() as session:
        succeeded = (
            await session.execute(
                select(StageRun.stage, func.count())
                .where(StageRun.status == "succeeded")
                .group_by(StageRun.stage)
                .order_by(StageRun.stage)
            )
        ).all()
    assert [tuple(row) for row in succeeded] == [("act", 20), ("classify", 20), ("process", 20)]
    assert len(fake_nylas.requests_to("/messages/")) == 20, "each email starred once"


async def test_sweeper_leaves_live_jobs_alone(
    per_event: Settings, per_event_api: httpx.AsyncClient, redis: ArqRedis
) -> None:
    await post(per_event_api, envelope(message()))
    found = await helpers.sweep_now(per_event, redis)
    assert found == {"events_stuck": 1, "events_requeued": 0, "emails_stuck": 0, "emails_requeued": 0}
    assert len(await helpers.queued_job_ids(redis)) == 1


async def test_sweeper_leaves_events_waiting_for_the_batch_workers_to_them(
    settings: Settings, api: httpx.AsyncClient, redis: ArqRedis, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Nothing of theirs is in Redis to lose: a flush changes nothing, the next claim takes them."""
    await post(api, envelope(message()))
    await redis.flushdb()
    found = await helpers.sweep_now(settings, redis)
    assert found == {"events_stuck": 0, "events_requeued": 0, "emails_stuck": 0, "emails_requeued": 0}
    await drain(settings)
    assert [e.status for e in await helpers.events(sessionmaker)] == ["processed"]


async def test_event_stored_while_redis_was_down_is_picked_up_by_the_sweeper(
    per_event: Settings, redis: ArqRedis, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    settings = per_event
    async with running_api(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})) as client:
        assert (await post(client, envelope(message()))).json()["status"] == "received"

    await helpers.sweep_now(settings, redis)
    await drain(settings)

    (event,) = await helpers.events(sessionmaker)
    assert event.status == "processed"
    assert len(await helpers.emails(sessionmaker)) == 1


async def test_a_tick_runs_once_even_when_its_job_runs_twice(
    settings: Settings, redis: ArqRedis, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    jc = build_context(settings, redis)
    ran: list[str] = []

    async def body(_: Any, tick: str) -> dict[str, Any]:
        ran.append(tick)
        await asyncio.sleep(0.2)
        return {"ok": True}

    tick = datetime.now(UTC).replace(microsecond=0)
    try:
        together = await asyncio.gather(run_once(jc, "demo", tick, body), run_once(jc, "demo", tick, body))
        later = await run_once(jc, "demo", tick, body)
    finally:
        await close_context(jc)
    assert len(ran) == 1
    assert {"ok": True} in together
    assert later == {"skipped": "tick already ran"}


async def test_two_workers_run_each_cron_tick_once(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    ticked = await sweep_ticking_on_two_workers(settings, sessionmaker, ticks=3, within=15)
    runs = ticked.runs
    ticks_seen = [run.tick_at.timestamp() for run in runs]
    assert len(ticks_seen) == len(set(ticks_seen))
    assert len(runs) <= ticked.elapsed + 1, "no more runs than ticks"
    assert all(b - a == 1 for a, b in itertools.pairwise(ticks_seen)), "no tick skipped"
    # The shutdown may cancel the tick that was running when it came; every earlier one finished cleanly.
    assert all(run.finished_at is not None and run.error is None for run in runs[:-1])
    # A tick's job run twice would complete twice ("tick already ran") but add no row; the last tick's job may
    # have been cancelled by the shutdown before arq counted it.
    assert len(runs) - 1 <= ticked.jobs_completed <= len(runs), "each tick's job ran once across both workers"


async def test_cron_sync_finds_messages_no_webhook_brought(
    settings: Settings,
    api: httpx.AsyncClient,
    redis: ArqRedis,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_nylas: FakeNylas,
) -> None:
    now = int(time.time())
    for n in range(5):
        fake_nylas.add_message(message(message_id=f"m{n}", date=now - n * 60, subject=f"hello {n}"))
    await post(api, envelope(fake_nylas.messages[("grant_1", "m0")]))  # the only one a webhook brought
    await drain(settings)

    jc = build_context(settings.model_copy(update={"sync_page_size": 2}), redis)
    try:
        assert await sync_recent_emails(jc, "tick-1") == {"grants": 1}
    finally:
        await close_context(jc)
    await drain(settings.model_copy(update={"sync_page_size": 2}))

    emails = await helpers.emails(sessionmaker)
    assert sorted(e.message_id for e in emails) == [f"m{n}" for n in range(5)]
    assert all(e.pipeline_state == "done" for e in emails), "synced emails go through the chain too"
    pages = [r for r in fake_nylas.requests_to("/grants/grant_1/messages") if "received_after" in r.query]
    assert len(pages) == 3, "5 messages, 2 a page"
    grant = await helpers.grant(sessionmaker, "grant_1")
    assert grant is not None and grant.sync_cursor is not None and grant.sync_cursor.timestamp() >= now


async def test_manual_sync_prints_what_it_found(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas, redis: ArqRedis
) -> None:
    now = int(time.time())
    for n in range(3):
        fake_nylas.add_message(message(grant_id="grant_9", message_id=f"s{n}", date=now))
    code, out, err = await mailroom(settings, "sync", "--grant", "grant_9", "--since", "2020-01-01")
    assert code == 0, err
    assert "3 new emails" in out
    assert sorted(e.message_id for e in await helpers.emails(sessionmaker)) == ["s0", "s1", "s2"]
    assert len(await helpers.queued_job_ids(redis)) == 3, "queued for classification"
