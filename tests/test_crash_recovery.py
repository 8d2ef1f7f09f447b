"""A worker killed with SIGKILL mid-batch: another worker finishes its work within arq's recovery bound."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from jobs.worker import close_worker, create_worker
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.commands import MAILROOM, cli_env
from tests.notifications import envelope, message, post, truncated

JOB_TIMEOUT = 3.0
# arq lets another worker take a job once its in-progress mark expires: the longest job timeout + 10 s; a batch
# worker's claim takes a killed batch's events after the same.
RECOVERY_BOUND = JOB_TIMEOUT + 10


@pytest.mark.slow
async def test_killed_worker_batch_completes_on_another_worker(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    """SIGKILL mid-batch: the event stays `processing`; a surviving worker's claim takes it once it is older than
    the bound (the killed try counted), and the email is stored once."""
    settings = settings.model_copy(update={"job_timeout": JOB_TIMEOUT})
    fake_nylas.add_message(message())
    fake_nylas.latency = 60  # the first worker will be stuck in the fetch when it dies
    await post(api, envelope(truncated(message()), type="message.created.truncated"))

    env = cli_env(settings) | {"MAILROOM_JOB_TIMEOUT": str(JOB_TIMEOUT)}
    doomed = await asyncio.create_subprocess_exec(
        MAILROOM, "worker", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while not fake_nylas.requests_to("/messages/msg_1"):
            assert time.monotonic() < deadline, "the first worker never started the batch"
            await asyncio.sleep(0.05)
        assert [e.status for e in await helpers.events(sessionmaker)] == ["processing"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(doomed.pid, signal.SIGKILL)
        await doomed.wait()
    killed_at = time.monotonic()
    fake_nylas.latency = 0

    survivor = create_worker(settings, handle_signals=False, poll_delay=0.05, cron_jobs=[])
    task = asyncio.create_task(survivor.async_run())
    try:
        while (await helpers.events(sessionmaker))[0].status != "processed":
            assert time.monotonic() - killed_at < RECOVERY_BOUND + 10, "not recovered in time"
            await asyncio.sleep(0.1)
        recovered_in = time.monotonic() - killed_at
    finally:
        await close_worker(survivor)
        await asyncio.gather(task, return_exceptions=True)

    assert recovered_in < RECOVERY_BOUND + 2
    (event,) = await helpers.events(sessionmaker)
    assert event.attempts == 2, "the killed try counts"
    assert len(await helpers.emails(sessionmaker)) == 1
    fetches = [r for r in fake_nylas.requests_to("/messages/msg_1") if r.method == "GET"]
    assert len(fetches) == 2, "fetched by the killed batch, then once more"
