"""Nylas's side of the pipe: a destination that goes `failing` is seen on /metrics, /readyz, the dashboard and in
`mailroom stats`, and what Nylas skipped meanwhile is fetched by a backfill of every grant."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from jobs.context import JobContext
from jobs.webhook_health import NYLAS_FAILING_AFTER, check_destinations
from jobs.worker import build_context, close_context, cron_jobs
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.commands import mailroom
from tests.harness import api_in_process, drain
from tests.notifications import envelope, message, post

URL = "https://mail.example.com/webhooks/nylas"
TOKEN = "destinations-admin-token-0001"


@pytest.fixture
async def jc(settings: Settings, redis: ArqRedis) -> AsyncIterator[JobContext]:
    context = build_context(settings, redis)
    yield context
    await close_context(context)


def destinations_metric(text: str) -> dict[str, float]:
    return {
        sample.labels["status"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mailroom_nylas_webhook_destinations"
    }


async def test_an_outage_is_seen_everywhere_and_its_recovery_backfills_every_grant(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_nylas: FakeNylas,
    jc: JobContext,
) -> None:
    settings = settings.model_copy(update={"admin_token": SecretStr(TOKEN)})
    destination = fake_nylas.add_webhook(URL)
    async with api_in_process(settings) as client:
        for grant in ("grant_1", "grant_2"):
            await post(client, envelope(message(grant_id=grant, message_id=f"heard-{grant}")))
    await drain(settings)
    assert await check_destinations(jc, "t1") == {"destinations": 1, "unhealthy": 0, "backfilled_grants": 0}

    fake_nylas.set_webhook_status(destination, "failing")
    assert (await check_destinations(jc, "t2"))["unhealthy"] == 1
    # What Nylas did not deliver while the destination failed.
    for grant in ("grant_1", "grant_2"):
        fake_nylas.add_message(message(grant_id=grant, message_id=f"skipped-{grant}", date=int(time.time())))

    async with api_in_process(settings) as client:
        said = (await client.get("/readyz")).json()["checks"]["nylas_webhooks"]
        assert destination in said and "failing since" in said and URL not in said, "public: no URL"
        assert destinations_metric((await client.get("/metrics")).text) == {
            "active": 0,
            "failing": 1,
            "failed": 0,
            "pause": 0,
        }
        overview = (await client.get("/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})).json()
        assert [(d["id"], d["status"]) for d in overview["nylas_webhooks"]] == [(destination, "failing")]
    code, out, err = await mailroom(settings, "stats")
    assert code == 0 and f"destination {destination} is failing" in out, err

    fake_nylas.set_webhook_status(destination, "active")
    fake_nylas.requests.clear()
    assert await check_destinations(jc, "t3") == {"destinations": 1, "unhealthy": 0, "backfilled_grants": 2}
    await drain(settings)
    stored = {e.message_id for e in await helpers.emails(sessionmaker)}
    assert {"skipped-grant_1", "skipped-grant_2"} <= stored, "fetched by the backfill"
    (destination_row,) = await helpers.destinations(sessionmaker)
    listed_from = {
        int(r.query.split("received_after=")[1].split("&")[0])
        for r in fake_nylas.requests_to("/messages")
        if "received_after" in r.query
    }
    (since,) = listed_from
    assert since <= time.time() - NYLAS_FAILING_AFTER.total_seconds() - settings.sync_overlap_seconds
    assert destination_row.status == "active" and destination_row.unhealthy_since is None


async def test_while_an_outage_lasts_grants_are_backfilled_no_more_often_than_set(
    settings: Settings, fake_nylas: FakeNylas, redis: ArqRedis
) -> None:
    assert settings.nylas_webhook_backfill_after_seconds == 15 * 60, "the default"
    fake_nylas.add_webhook(URL, status="failed")
    async with api_in_process(settings) as client:
        await post(client, envelope(message()))
    await drain(settings)
    jc = build_context(settings, redis)
    try:
        first = await check_destinations(jc, "t1")
        second = await check_destinations(jc, "t2")
        third = await check_destinations(jc, "t3")
    finally:
        await close_context(jc)
    assert first["backfilled_grants"] == 0, "first seen unhealthy: said, not yet backfilled"
    assert second["backfilled_grants"] == 1, "Nylas's errors began 15 minutes before it said failing: 15 min silent"
    assert third["backfilled_grants"] == 0, "the next one 15 minutes (the setting) after the last"


async def test_the_check_is_scheduled_as_set_and_only_schedulable_periods_are_accepted(settings: Settings) -> None:
    names = {job.name: job for job in cron_jobs(settings)}
    assert names["cron:nylas_webhooks"].minute == set(range(0, 60, 5))
    assert "cron:nylas_webhooks" not in {
        j.name for j in cron_jobs(settings.model_copy(update={"nylas_webhook_check_seconds": 0}))
    }
    for wrong in (45, 420, 7):
        with pytest.raises(ValidationError, match="divisor of 60 seconds"):
            Settings(_env_file=None, nylas_webhook_check_seconds=wrong)


async def test_no_api_key_no_check(settings: Settings, redis: ArqRedis) -> None:
    jc = build_context(settings.model_copy(update={"nylas_api_key": SecretStr("")}), redis)
    try:
        assert await check_destinations(jc, "t") == {"skipped": "no MAILROOM_NYLAS_API_KEY"}
    finally:
        await close_context(jc)
