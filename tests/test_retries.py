"""The retry policy on real failures from the fake Nylas: backoff, Retry-After, dead letters and replay."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from db import stage_runs
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.commands import mailroom
from tests.harness import drain
from tests.notifications import envelope, message, post, truncated

Drain = Callable[[], Awaitable[None]]


async def process_runs(sessionmaker: async_sessionmaker[AsyncSession], event_id: int = 1) -> list[tuple[str, int]]:
    async with sessionmaker() as session:
        runs = await stage_runs.timeline(session, email_id=None, event_id=event_id)
    return [(run.status, run.attempt) for run in runs if run.stage == "process"]


async def test_429_waits_at_least_retry_after_then_succeeds(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    fake_nylas.add_message(message())
    fake_nylas.fail(429, retry_after=0.6, path_contains="/messages/msg_1")
    await post(api, envelope(truncated(message()), type="message.created.truncated"))

    await drain(settings)

    assert await process_runs(sessionmaker) == [("retrying", 1), ("succeeded", 2)]
    first, second = fake_nylas.requests_to("/messages/msg_1")[:2]
    assert second.at - first.at >= 0.6, "the grant cooled down for Retry-After before the next call"
    (email,) = await helpers.emails(sessionmaker)
    assert email.body == "<div>Please find...</div>"


async def test_5xx_is_retried_with_growing_backoff_windows(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    """Full jitter: try n waits uniform(0, base * 2^(n-1)); the recorded delays stay in their windows."""
    fake_nylas.add_message(message())
    fake_nylas.fail(503, times=2, path_contains="/messages/msg_1")
    await post(api, envelope(truncated(message()), type="message.created.truncated"))

    await drain(settings.model_copy(update={"retry_base_delay": 0.2, "retry_max_delay": 10.0}))

    async with sessionmaker() as session:
        runs = [r for r in await stage_runs.timeline(session, email_id=None, event_id=1) if r.stage == "process"]
    assert [(r.status, r.attempt) for r in runs] == [("retrying", 1), ("retrying", 2), ("succeeded", 3)]
    delays = [r.detail["retry_in_s"] for r in runs[:2] if r.detail]
    assert 0 <= delays[0] <= 0.2
    assert 0 <= delays[1] <= 0.4
    calls = fake_nylas.requests_to("/messages/msg_1")
    assert [round(b.at - a.at, 3) >= d - 0.01 for a, b, d in zip(calls, calls[1:], delays, strict=False)] == [
        True,
        True,
    ]


async def test_non_json_502_and_timeouts_are_transient(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    fake_nylas.add_message(message())
    fake_nylas.fail(502, html=True, path_contains="/messages/msg_1")
    fake_nylas.fail(500, delay=1.5, path_contains="/messages/msg_1")  # slower than the SDK's timeout below
    await post(api, envelope(truncated(message()), type="message.created.truncated"))

    await drain(settings.model_copy(update={"nylas_timeout": 0.5, "job_max_tries": 4}))

    runs = await process_runs(sessionmaker)
    assert runs == [("retrying", 1), ("retrying", 2), ("succeeded", 3)]
    async with sessionmaker() as session:
        errors = [r.error for r in await stage_runs.timeline(session, email_id=None, event_id=1)][:2]
    assert "JSONDecodeError" in (errors[0] or "")
    assert "did not answer" in (errors[1] or "")


async def test_tries_exhausted_dead_letter_then_replay_processes_it(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    fake_nylas.add_message(message())
    fake_nylas.fail(503, times=3, path_contains="/messages/msg_1")
    await post(api, envelope(truncated(message()), type="message.created.truncated"))
    await drain(settings)

    (event,) = await helpers.events(sessionmaker)
    assert (event.status, event.attempts) == ("dead", 3)
    async with sessionmaker() as session:
        dead_run = (await stage_runs.timeline(session, email_id=None, event_id=event.id))[-1]
    assert dead_run.status == "dead"
    assert dead_run.traceback is not None and "TransientError" in dead_run.traceback

    code, out, err = await mailroom(settings, "replay", "--stage", "process", "--error", "503", "--dry-run")
    assert code == 0, err
    assert "would replay 1 events" in out
    assert (await helpers.events(sessionmaker))[0].status == "dead", "a dry run changes nothing"

    code, out, err = await mailroom(settings, "replay", "--stage", "process", "--error", "503")
    assert code == 0, err
    assert "replayed 1 events" in out
    await drain(settings)

    (event,) = await helpers.events(sessionmaker)
    assert (event.status, event.attempts) == ("processed", 1)
    assert len(await helpers.emails(sessionmaker)) == 1


async def test_replay_filters_by_grant(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    for grant in ("grant_a", "grant_b"):
        fake_nylas.fail(500, times=3, path_contains=f"/grants/{grant}/")
        await post(api, envelope(truncated(message(grant_id=grant)), type="message.created.truncated"))
    await drain(settings)
    assert [e.status for e in await helpers.events(sessionmaker)] == ["dead", "dead"]

    code, _out, err = await mailroom(settings, "replay", "--grant", "grant_b")
    assert code == 0, err

    statuses = {e.grant_id: e.status for e in await helpers.events(sessionmaker)}
    assert statuses == {"grant_a": "dead", "grant_b": "queued"}


async def test_one_flooded_grant_does_not_starve_another(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    """40 fetches for grant_a at 10 calls/s take 4 s; grant_b's one fetch is not queued behind them."""
    for n in range(40):
        fake_nylas.add_message(message(grant_id="grant_a", message_id=f"a{n}"))
        await post(api, envelope(truncated(message(grant_id="grant_a", message_id=f"a{n}")), type="message.updated"))
    fake_nylas.add_message(message(grant_id="grant_b", message_id="b0"))
    await post(api, envelope(truncated(message(grant_id="grant_b", message_id="b0")), type="message.updated"))

    await drain(settings.model_copy(update={"nylas_rate_per_grant": 10, "worker_concurrency": 20}))

    processed = sorted(
        (e.processed_at, e.grant_id) for e in await helpers.events(sessionmaker) if e.processed_at is not None
    )
    assert len(processed) == 41
    position_of_b = [grant for _, grant in processed].index("grant_b")
    assert position_of_b < 15, f"grant_b waited behind {position_of_b} of grant_a's 40"
    per_second: dict[int, int] = {}
    for request in fake_nylas.requests_to("/grants/grant_a/"):
        per_second[int(request.at)] = per_second.get(int(request.at), 0) + 1
    assert max(per_second.values()) <= 20, "about 10 a second (a window edge can let two windows' worth close)"


async def test_cli_job_status_reads_results_written_with_json(settings: Settings) -> None:
    """Job results are JSON in Redis, never pickle."""
    code, out, _ = await mailroom(settings, "enqueue-test", "x")
    assert code == 0
    await asyncio.wait_for(drain(settings), timeout=30)
    code, out, _ = await mailroom(settings, "job", out.strip())
    assert orjson.loads(out)["result"]["message"] == "x"
