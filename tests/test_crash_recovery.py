"""A worker killed with SIGKILL mid-job: another worker finishes the job within arq's recovery bound."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import StageRun
from jobs.worker import create_worker
from mailroom.fake_nylas import FakeNylas
from mailroom.settings import Settings
from tests import helpers
from tests.notifications import envelope, message, post, truncated
from tests.test_cli import MAILROOM, cli_env

JOB_TIMEOUT = 3.0
# arq lets another worker take a job once its in-progress mark expires: the longest job timeout + 10 s.
RECOVERY_BOUND = JOB_TIMEOUT + 10


@pytest.mark.slow
async def test_killed_worker_job_completes_on_another_worker(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    settings = settings.model_copy(update={"job_timeout": JOB_TIMEOUT})
    fake_nylas.add_message(message())
    fake_nylas.latency = 60  # the first worker will be stuck in the fetch when it dies
    await post(api, envelope(truncated(message()), type="message.created.truncated"))

    env = cli_env(settings) | {"MAILROOM_JOB_TIMEOUT": str(JOB_TIMEOUT)}
    doomed = await asyncio.create_subprocess_exec(
        MAILROOM, "worker", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )

    async def running() -> bool:
        async with sessionmaker() as session:
            runs = (await session.execute(select(StageRun.status))).scalars().all()
        return list(runs) == ["running"]

    deadline = time.monotonic() + 20
    while not await running():
        assert time.monotonic() < deadline, "the first worker never started the job"
        await asyncio.sleep(0.05)
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
        await survivor.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert recovered_in < RECOVERY_BOUND + 5
    (event,) = await helpers.events(sessionmaker)
    assert event.attempts == 2, "the killed try counts"
    assert len(await helpers.emails(sessionmaker)) == 1
