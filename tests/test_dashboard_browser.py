"""The dashboard in a real headless Chromium: log in, see a processed event, replay a dead letter, see it done.

Uses Debian's Chromium (no browser download). Skipped, loudly, only where no Chromium is installed and not in CI.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from jobs import arq_storage
from jobs.enqueue import queue_for
from jobs.worker import close_worker, create_worker
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.harness import drain, running_api
from tests.notifications import envelope, message, post, truncated

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
TOKEN = "browser-test-token"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="NO CHROMIUM: the dashboard browser test needs Debian's chromium (apt-get install chromium)",
)


async def test_log_in_see_events_and_replay_a_dead_letter(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    from playwright.async_api import async_playwright, expect

    assert CHROMIUM is not None, "CI must install chromium (see .ci/run)"
    settings = settings.model_copy(
        update={"admin_token": Settings(_env_file=None, admin_token=TOKEN).admin_token, "history_seconds": 1}
    )
    fake_nylas.add_message(message(message_id="dead1", subject="Quarterly numbers"))
    fake_nylas.fail(503, times=3, path_contains="/messages/dead1")
    # An urgent email whose act stage (star it) fails until it dies: a dead email, not a dead event.
    fake_nylas.add_message(message(message_id="urgent1", subject="Urgent: sign today"))
    fake_nylas.fail(503, times=3, path_contains="/messages/urgent1")

    async with running_api(settings) as client:
        await post(client, envelope(message(subject="Lunch on Friday")))
        await post(client, envelope(truncated(message(message_id="dead1")), type="message.created.truncated"))
        await post(client, envelope(message(message_id="urgent1", subject="Urgent: sign today")))
        await drain(settings)
        assert [e.status for e in await helpers.events(sessionmaker)] == ["processed", "dead", "processed"]
        assert [(m.message_id, m.pipeline_state) for m in await helpers.emails(sessionmaker) if m.dead_at] == [
            ("urgent1", "act")
        ]

        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            page = await browser.new_page(viewport={"width": 1366, "height": 900})
            await page.goto(f"{client.base_url}/dashboard")

            # Signed out: the login form alone, no controls, no server text.
            await expect(page.locator("#login")).to_be_visible()
            await expect(page.locator("#app")).to_be_hidden()
            await expect(page.locator("#signed-in")).to_be_hidden()
            await expect(page.locator("#status")).to_have_text("not signed in")
            await page.fill("#token", TOKEN)
            await page.click("#login-button")

            # History charts drawn by uPlot from what the API sampled, with axes and legends; a reload keeps them.
            for chart, series in (("#depth-chart", "ready"), ("#rate-chart", "processed")):
                await expect(page.locator(f"{chart} .u-legend")).to_contain_text(series)
                await expect(page.locator(f"{chart} .u-axis")).to_have_count(2)
            note = page.locator("#history-note")
            await expect(note).to_contain_text(" points", timeout=15_000)
            points = int((await note.inner_text()).split(", ")[1].split()[0])
            await page.reload()
            await expect(note).to_contain_text(" points")
            assert int((await note.inner_text()).split(", ")[1].split()[0]) >= points, "the history is the server's"

            events = page.locator("#events")
            await expect(events).to_contain_text("processed")
            await expect(events).to_contain_text("dead")
            # urgent1's event was processed, but its email died at act: the row says so, in red.
            urgent_row = events.locator("tr.clickable", has_text="urgent1")
            await expect(urgent_row.locator(".email-state")).to_have_text("email dead at act")
            await expect(urgent_row.locator(".pill.s-dead")).to_have_count(1)
            assert "Lunch" not in await page.content(), "email content is masked until revealed"

            await page.locator("#events tr.clickable", has_text="dead1").click()
            await expect(page.locator("#detail")).to_contain_text("retrying")
            # Each run's duration, and its traceback a click away.
            await expect(page.locator("#detail td.took").first).to_contain_text(" ms")
            dead_try = page.locator("#detail details.traceback")  # the third try's, which died
            await expect(dead_try).to_have_count(1)
            await expect(dead_try.locator("pre")).to_be_hidden()
            await dead_try.locator("summary").click()
            await expect(dead_try.locator("pre")).to_contain_text("Traceback")

            # urgent1's panel open while its email is replayed: its action states are redrawn, not left stale.
            await urgent_row.click()
            await expect(page.locator("#detail")).not_to_contain_text("star done")

            # The dead email's own button replays that email only: the dead event stays dead.
            replay = page.locator("#dead button.replay")
            await expect(replay).to_have_count(2)
            email_row = page.locator("#dead tr", has_text="email: act")
            await email_row.locator("button.replay").click()
            await expect(email_row.locator("button.replay")).to_have_text("queued")
            await drain(settings)
            assert [m.pipeline_state for m in await helpers.emails(sessionmaker) if m.message_id == "urgent1"] == [
                "done"
            ]
            assert fake_nylas.messages[("grant_1", "urgent1")]["starred"] is True, "the replay starred it at Nylas"
            assert [e.status for e in await helpers.events(sessionmaker)] == ["processed", "dead", "processed"]
            await expect(replay).to_have_count(1, timeout=10_000)
            await expect(page.locator("#detail")).to_contain_text("star done", timeout=10_000)

            # A replay refused says why, and keeps saying it when the panel is drawn again.
            processed_row = page.locator("#events tr.clickable", has_text="urgent1")
            await processed_row.click()
            await expect(page.locator("#detail")).to_contain_text(
                f"event {await processed_row.get_attribute('data-id')}"
            )
            await page.click("#detail-replay")
            refused = page.locator("#detail .refused")
            await expect(refused).to_contain_text("nothing dead here")
            await page.click("#search-button")  # the events and the panel are drawn again
            await expect(refused).to_contain_text("nothing dead here")

            # The backend answering 5xx, then not at all: a banner says so (not "connecting…" forever), then goes.
            banner = page.locator("#backend-error")
            await page.route(
                "**/api/overview*",
                lambda route: route.fulfill(
                    status=503, content_type="application/json", body='{"error": "unavailable", "detail": "Redis down"}'
                ),
            )
            await expect(banner).to_contain_text("mailroom answered 503: Redis down")
            await page.unroute("**/api/overview*")
            await page.route("**/api/overview*", lambda route: route.abort())
            await expect(banner).to_contain_text("mailroom is not answering")
            await page.unroute("**/api/overview*")
            await expect(banner).to_be_hidden()

            # The audit trail: the row's replay, by this dashboard session.
            await expect(page.locator("#audit")).to_contain_text("dashboard@127.0.0.1")
            await expect(page.locator("#audit")).to_contain_text("replay")

            # A job waiting in the queue, cancelled from the Jobs section: gone from Redis.
            queue = queue_for(settings)
            try:
                await queue.enqueue_job("test_task", "waits", _job_id="waiting-job", _defer_by=timedelta(minutes=5))
                jobs = page.locator("#jobs")
                await expect(jobs).to_contain_text("waiting-job", timeout=10_000)
                await jobs.locator("tr", has_text="waiting-job").locator("button.cancel").click()
                await expect(jobs.locator("tr", has_text="waiting-job")).to_have_count(0, timeout=10_000)
                assert await arq_storage.queued_ids(queue, settings.queue_name) == []
                # Cancel by filter: the dry run's count in the confirmation; declined, nothing is cancelled.
                for n in range(3):
                    await queue.enqueue_job("test_task", "waits", _job_id=f"later-{n}", _defer_by=timedelta(minutes=5))
                await page.select_option("#jobs-state", "scheduled")
                await page.select_option("#jobs-function", "test_task")
                await expect(jobs.locator("tr", has_text="later-")).to_have_count(3, timeout=10_000)
                page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.dismiss()))
                await page.click("#jobs-cancel-matching")
                await expect(page.locator("#jobs-said")).to_have_text(
                    "3 waiting jobs match (3 test_task); not cancelled"
                )
                assert len(await arq_storage.queued_ids(queue, settings.queue_name)) == 3
                page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
                await page.click("#jobs-cancel-matching")
                await expect(page.locator("#jobs-said")).to_have_text("cancelled 3")
                assert await arq_storage.queued_ids(queue, settings.queue_name) == []
                # Recently finished jobs, a page at a time.
                await page.select_option("#jobs-function", "")
                await page.select_option("#jobs-state", "finished")
                await expect(jobs.locator(".pill.s-succeeded").first).to_be_visible(timeout=10_000)
                await page.select_option("#jobs-state", "all")
            finally:
                await queue.aclose()

            # Pause a stage from the dashboard (stored in PostgreSQL for every worker), then resume it.
            await page.select_option("#pause-scope", "stage")
            await page.fill("#pause-target", "act")
            await page.click("#pause-button")
            await expect(page.locator("#pauses")).to_contain_text("paused: stage act")
            assert [(p.scope, p.target) for p in await helpers.pauses(sessionmaker)] == [("stage", "act")]
            await page.click("#pauses button.resume")
            await expect(page.locator("#pauses")).to_contain_text("nothing paused")
            assert await helpers.pauses(sessionmaker) == []
            await expect(page.locator("#audit")).to_contain_text("resume")

            # A grant's Nylas call rate set from the dashboard (PostgreSQL, for every worker), then back to default.
            await page.fill("#rate-grant", "grant_1")
            await page.fill("#rate-value", "2")
            await page.click("#rate-button")
            await expect(page.locator("#rates")).to_contain_text("grant_1: 2 a second")
            assert (grant := await helpers.grant(sessionmaker, "grant_1")) and grant.nylas_rate == 2
            await page.click("#rates button.rate-reset")
            await expect(page.locator("#rates .rate-row")).to_have_count(0)
            assert (grant := await helpers.grant(sessionmaker, "grant_1")) and grant.nylas_rate is None
            await expect(page.locator("#audit tr", has_text='"rate":2')).to_have_count(1)

            # Replay all: counted first, said in the confirmation, replayed only once confirmed.
            asked: list[str] = []

            async def confirm(dialog: Any) -> None:
                asked.append(dialog.message)
                await dialog.accept()

            # Replay by filter: the count first; declined, nothing is replayed.
            page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.dismiss()))
            await page.select_option("#filter-stage", "process")
            await page.fill("#filter-error", "503")
            await page.click("#filter-replay")
            await expect(page.locator("#filter-said")).to_have_text(
                "1 dead events and 0 dead email stages match; not replayed"
            )
            assert [e.status for e in await helpers.events(sessionmaker)].count("dead") == 1

            page.on("dialog", confirm)
            await page.click("#replay-all")
            await expect(page.locator("#replay-all-said")).to_have_text("replayed 1")
            assert asked == ["Replay all 1 dead events and 0 dead email stages?"]
            await drain(settings)

            await expect(page.locator("#dead")).to_contain_text("none", timeout=10_000)
            await expect(events.locator(".pill.s-dead")).to_have_count(0, timeout=10_000)
            # A live worker on the Workers card: host, pid, uptime, its stage runs, its last heartbeat.
            worker = create_worker(settings, handle_signals=False, poll_delay=0.05, cron_jobs=[])
            running = asyncio.create_task(worker.async_run())
            try:
                workers = page.locator("#workers")
                await expect(workers).to_contain_text(f"pid {os.getpid()}", timeout=15_000)
                await expect(workers.locator(".worker-done")).to_have_text("0 done")
                await expect(workers).to_contain_text(" s ago")
                ARTIFACTS.mkdir(exist_ok=True)
                # Nothing wider than the screen, on a laptop and on a phone.
                for width, name in ((1366, "dashboard.png"), (390, "dashboard-phone.png")):
                    await page.set_viewport_size({"width": width, "height": 900})
                    await expect(page.locator("#audit")).to_be_visible()
                    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                    assert overflow <= 0, f"the page is {overflow} px wider than a {width} px screen"
                    await page.screenshot(path=str(ARTIFACTS / name), full_page=True)
                await page.set_viewport_size({"width": 1366, "height": 900})
            finally:
                await close_worker(worker)
                await asyncio.gather(running, return_exceptions=True)

            # The events list a page at a time: 33 events, 30 a page; older, then newer again.
            for n in range(30):
                assert (await post(client, envelope({"id": f"cal{n}"}, type="calendar.created"))).status_code == 200
            await page.click("#search-button")
            await expect(events.locator("tr.clickable")).to_have_count(30)
            await expect(page.locator("#events-page")).to_have_text("newest")
            await page.click("#events-older")
            await expect(page.locator("#events-page")).to_have_text("page 2")
            await expect(events.locator("tr.clickable")).to_have_count(3)
            await expect(events).to_contain_text("msg_1")
            await expect(page.locator("#events-older")).to_be_disabled()
            await page.click("#events-newer")
            await expect(events.locator("tr.clickable")).to_have_count(30)
            await expect(page.locator("#events-newer")).to_be_disabled()

            # Logging out revokes the session: the page comes back to the login form.
            await page.click("#logout")
            await expect(page.locator("#login")).to_be_visible()
            await browser.close()

    assert [e.status for e in await helpers.events(sessionmaker)][:3] == ["processed", "processed", "processed"]
