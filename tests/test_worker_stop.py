"""Stopping a worker releases what it holds, whatever its jobs were doing when the stop came."""

from __future__ import annotations

import asyncio

import pytest
from arq import Worker

from core.settings import Settings
from jobs.context import CTX_KEY
from jobs.worker import close_worker, create_worker
from tests.harness import poll_until


async def started_worker(settings: Settings) -> tuple[Worker, asyncio.Task[None]]:
    worker = create_worker(settings, handle_signals=False, poll_delay=0.05, cron_jobs=[])
    task = asyncio.create_task(worker.async_run())
    await poll_until(lambda: CTX_KEY in worker.ctx, what="the worker's start-up")
    # Stands in for a job caught between being taken from Redis and calling its function, where arq has no
    # handler of its own: cancelled there, its task ends cancelled (CI met this with a cron tick).
    worker.tasks["taken-not-started"] = asyncio.create_task(asyncio.Event().wait())
    return worker, task


async def test_a_worker_closed_mid_job_still_runs_its_shutdown(settings: Settings) -> None:
    worker, task = await started_worker(settings)
    await close_worker(worker)
    await asyncio.gather(task, return_exceptions=True)
    assert CTX_KEY not in worker.ctx, "on_shutdown ran: the pump, the heartbeat and the engine are closed"
    assert not worker.tasks


async def test_arq_close_alone_would_skip_the_shutdown(settings: Settings) -> None:
    """Why close_worker exists; when an arq release fixes this, close_worker can become plain `close`."""
    worker, task = await started_worker(settings)
    with pytest.raises(asyncio.CancelledError):
        await worker.close()
    assert CTX_KEY in worker.ctx, "arq's close stopped before on_shutdown"
    await close_worker(worker)
    await asyncio.gather(task, return_exceptions=True)
    assert CTX_KEY not in worker.ctx
