"""The dashboard's history: the APIs sample queue depth and the stage counters into PostgreSQL, so the charts show
the last hour after a page reload, after the API that sampled it stopped, and from whichever API answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from db import history
from db.models import HistorySample
from tests.harness import api_in_process, drain, poll_until
from tests.notifications import envelope, message, post

TOKEN = "history-admin-token-0001"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EMPTY = dict.fromkeys(
    (
        "ready",
        "deferred",
        "running",
        "oldest_ready_age_s",
        "dead",
        "webhooks",
        "processed",
        "classified",
        "acted",
        "failed",
    ),
    0,
)


async def test_history_is_kept_by_the_apis_and_served_by_any_of_them(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    sampling = settings.model_copy(update={"history_seconds": 1, "admin_token": SecretStr(TOKEN)})
    long_ago = datetime.now(UTC) - timedelta(hours=25)
    async with sessionmaker.begin() as session:
        await history.record(session, at=long_ago, figures=EMPTY)

    async def latest(client: Any) -> dict[str, Any]:
        answer = await client.get("/api/history?minutes=5", headers=AUTH)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async with api_in_process(sampling) as first:
        await poll_until(lambda: _has_samples(first, latest, 2), what="two samples before any mail", within=20)
        for n in range(6):
            await post(first, envelope(message(message_id=f"m{n}", subject="Lunch")))
        await poll_until(lambda: _newest(first, latest, "ready", 6), what="a sample with the 6 waiting events")
        await drain(settings)
        await poll_until(lambda: _newest(first, latest, "ready", 0), what="a sample after the drain")
        last_by_first = (await latest(first))["t"][-1]

    # The API that sampled all this is gone; another one serves it and goes on sampling.
    async with api_in_process(sampling) as second:
        await poll_until(lambda: _newest_after(second, latest, last_by_first), what="a sample by the second API")
        body = await latest(second)
    assert max(v for v in body["ready"] if v is not None) == 6, "the backlog sampled by the first API"
    times = body["t"]
    assert times == sorted(times) and len(set(times)) == len(times), "one point per interval"
    # Each rate times its interval adds up to what was done: the 6 webhooks answered, the 6 emails processed.
    for series in ("webhooks", "processed", "classified"):
        done = sum(
            rate * (t - times[i - 1]) for i, (t, rate) in enumerate(zip(times, body[series], strict=True)) if rate
        )
        assert round(done) == 6, (series, body[series])
    async with sessionmaker() as session:
        oldest = await session.scalar(select(func.min(HistorySample.at)))
    assert oldest is not None and oldest > long_ago, "samples older than MAILROOM_HISTORY_KEEP_HOURS are pruned"


async def _has_samples(client: Any, latest: Any, count: int) -> bool:
    return len((await latest(client))["t"]) >= count


async def _newest_after(client: Any, latest: Any, moment: float) -> bool:
    return bool((await latest(client))["t"][-1] > moment)


async def _newest(client: Any, latest: Any, series: str, value: float) -> bool:
    body = await latest(client)
    return bool(body["t"]) and body[series][-1] == value


async def test_history_needs_the_admin_token_and_a_sane_window(settings: Settings) -> None:
    settings = settings.model_copy(update={"admin_token": SecretStr(TOKEN)})
    async with api_in_process(settings) as client:
        assert (await client.get("/api/history")).status_code == 401
        too_long = await client.get("/api/history?minutes=100000", headers=AUTH)
        assert too_long.status_code == 400 and "minutes must be between 1 and 1440" in too_long.text
        assert (await client.get("/api/history?minuts=5", headers=AUTH)).status_code == 400
