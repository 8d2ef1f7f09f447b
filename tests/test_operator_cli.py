"""`mailroom inspect`, `stats` and `purge` against a real queue."""

from __future__ import annotations

import asyncio

import httpx
import orjson
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobs.enqueue import enqueue_test_task
from jobs.heartbeat import Heartbeat
from mailroom.settings import Settings
from tests import helpers
from tests.conftest import drain
from tests.fake_nylas import FakeNylas
from tests.notifications import envelope, message, post, truncated
from tests.test_cli import MAILROOM, cli_env, mailroom
from tests.test_sweep_and_cron import sweep_now


async def test_inspect_queued_scheduled_workers_and_dead(
    settings: Settings, api: httpx.AsyncClient, redis: ArqRedis, fake_nylas: FakeNylas
) -> None:
    await enqueue_test_task(redis, "now")
    await redis.enqueue_job("test_task", "later", _defer_by=600)
    beat = Heartbeat(redis, settings.queue_name, concurrency=7)
    beat.job_started("process_event:42")
    await beat.beat()

    code, out, err = await mailroom(settings, "inspect", "queued", "--json")
    assert code == 0, err
    assert [(j["function"], j["args"]) for j in orjson.loads(out)] == [("test_task", ["now"])]
    code, out, _ = await mailroom(settings, "inspect", "scheduled", "--json")
    assert [(j["function"], j["args"]) for j in orjson.loads(out)] == [("test_task", ["later"])]
    code, out, _ = await mailroom(settings, "inspect", "workers", "--json")
    assert [(w["concurrency"], w["running"]) for w in orjson.loads(out)] == [(7, 1)]
    code, out, _ = await mailroom(settings, "inspect", "active", "--json")
    assert [j["job_id"] for j in orjson.loads(out)] == ["process_event:42"]

    await redis.flushdb()
    fake_nylas.fail(503, times=3)
    await post(api, envelope(truncated(message()), type="message.created.truncated"))
    await drain(settings)
    code, out, _ = await mailroom(settings, "inspect", "dead", "--json")
    (dead,) = orjson.loads(out)
    assert (dead["stage"], dead["id"]) == ("process", "event 1")
    assert "503" in dead["error"]
    code, out, _ = await mailroom(settings, "inspect", "dead")
    assert "event 1" in out, "a table by default"


async def test_stats(settings: Settings, api: httpx.AsyncClient) -> None:
    await post(api, envelope(message()))
    code, out, err = await mailroom(settings, "stats", "--json")
    assert code == 0, err
    stats = orjson.loads(out)
    assert stats["queue"]["ready"] == 1
    assert stats["events"]["queued"] == 1


async def test_purge_asks_first_and_purged_events_stay_purged(
    settings: Settings, api: httpx.AsyncClient, redis: ArqRedis, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    for n in range(3):
        await post(api, envelope(message(message_id=f"m{n}")))

    process = await asyncio.create_subprocess_exec(
        MAILROOM,
        "purge",
        env=cli_env(settings),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    answered, _ = await asyncio.wait_for(process.communicate(b"n\n"), 60)
    assert process.returncode == 1
    assert b"3 jobs" in answered and b"nothing purged" in answered
    assert len(await helpers.queued_job_ids(redis)) == 3

    code, out, err = await mailroom(settings, "purge", "--yes")
    assert code == 0, err
    assert "purged 3 jobs; 3 events marked purged" in out
    assert await helpers.queued_job_ids(redis) == []
    assert [e.status for e in await helpers.events(sessionmaker)] == ["purged"] * 3

    found = await sweep_now(settings, redis)
    assert found["events_stuck"] == 0, "the sweeper does not bring purged events back"
