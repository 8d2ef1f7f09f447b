"""`mailroom inspect`, `stats` and `purge` against a real queue."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import orjson
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from jobs.enqueue import enqueue_test_task
from jobs.heartbeat import Heartbeat
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.commands import MAILROOM, cli_env, mailroom, mailroom_process
from tests.harness import drain
from tests.helpers import sweep_now
from tests.notifications import envelope, message, post, truncated


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
    assert stats["queue"]["ready"] == 1, "an event waiting for a batch worker is ready work"
    assert stats["events"]["received"] == 1


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
    assert b"3 webhook events waiting" in answered and b"nothing purged" in answered
    assert [e.status for e in await helpers.events(sessionmaker)] == ["received"] * 3

    code, out, err = await mailroom(settings, "purge", "--yes")
    assert code == 0, err
    assert "3 events marked purged" in out
    assert [e.status for e in await helpers.events(sessionmaker)] == ["purged"] * 3

    found = await sweep_now(settings, redis)
    assert found["events_stuck"] == 0, "the sweeper does not bring purged events back"

    code, out, err = await mailroom(settings, "replay", "--event", "2")
    assert code == 0, err
    assert "replayed 1 events" in out, "a purged event named by id comes back"
    code, out, err = await mailroom(settings, "replay", "--purged")
    assert code == 0, err
    assert "replayed 2 events" in out, "and the rest with --purged"
    await drain(settings)
    assert [e.status for e in await helpers.events(sessionmaker)] == ["processed"] * 3


async def test_purge_dry_run_lists_and_removes_nothing(
    settings: Settings, api: httpx.AsyncClient, redis: ArqRedis, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    for n in range(2):
        await post(api, envelope(message(message_id=f"m{n}")))
    code, out, err = await mailroom(settings, "purge", "--dry-run", "--yes")
    assert code == 0, err
    assert "would purge: events waiting (2)" in out
    assert "nothing purged" in out
    assert [e.status for e in await helpers.events(sessionmaker)] == ["received"] * 2


async def test_replay_says_why_it_replayed_nothing(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await post(api, envelope(message()))
    code, out, _ = await mailroom(settings, "replay", "--event", "1", "--event", "99")
    assert code == 1
    assert "event 1: received, not dead or purged" in out
    assert "event 99: not found" in out
    code, out, _ = await mailroom(settings, "replay", "--email", "7")
    assert code == 1
    assert "email 7: not found" in out
    code, out, _ = await mailroom(settings, "replay", "--grant", "nobody")
    assert code == 1
    assert "no dead letters match these filters" in out


async def test_replay_refuses_a_backwards_time_range(settings: Settings) -> None:
    code, _, err = await mailroom(settings, "replay", "--since", "2026-02-01", "--until", "2026-01-01")
    assert code == 1
    assert err.strip() == (
        "mailroom: since (2026-02-01T00:00:00+00:00) must be before until (2026-01-01T00:00:00+00:00)"
    )


async def test_inspect_titles_count_everything_and_limit_applies_to_every_listing(
    settings: Settings, redis: ArqRedis
) -> None:
    for n in range(5):
        await enqueue_test_task(redis, f"job {n}")
    code, out, err = await mailroom(settings, "inspect", "queued", "--limit", "2")
    assert code == 0, err
    assert "queued (2 shown of 5)" in out

    beat = Heartbeat(redis, settings.queue_name, concurrency=7)
    for n in range(3):
        beat.job_started(f"process_event:{n}")
    await beat.beat()
    code, out, err = await mailroom(settings, "inspect", "active", "--limit", "1", "--json")
    assert code == 0, err
    assert len(orjson.loads(out)) == 1
    code, out, err = await mailroom(settings, "inspect", "active", "--limit", "1")
    assert "active (1 shown of 3)" in out

    code, _, err = await mailroom(settings, "inspect", "queued", "--limit", "-1")
    assert code == 2
    assert "Traceback" not in err and "-1 is not 1 or more" in err


async def test_inspect_dead_shows_when_each_died(
    settings: Settings, api: httpx.AsyncClient, fake_nylas: FakeNylas
) -> None:
    fake_nylas.fail(503, times=3)
    await post(api, envelope(truncated(message()), type="message.created.truncated"))
    await drain(settings)
    code, out, err = await mailroom(settings, "inspect", "dead", "--json")
    assert code == 0, err
    (dead,) = orjson.loads(out)
    assert dead["died_at"].startswith(str(datetime.now(UTC).year))


async def test_stored_strings_are_not_rich_markup(settings: Settings, api: httpx.AsyncClient) -> None:
    """A grant id such as `[/bold]` is shown as it is, and does not crash the table."""
    await post(api, envelope(message(grant_id="[/bold]", subject="[red]not red[/red]")))
    await drain(settings)
    # A real process: rich reads COLUMNS when the CLI's consoles are made, at import.
    code, out, err = await mailroom_process(settings, "inspect", "emails", env={"COLUMNS": "200"})
    assert code == 0, err
    assert "[/bold]" in out and "[red]not red[/red]" in out
