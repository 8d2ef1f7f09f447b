"""Group commit in the worker: the `process_events` jobs running at once share one batch.

Each API group commit queues one job, so under load the worker holds many small jobs at a time. Run apart, each
would pay the batch's fixed cost (two transactions, a Redis call, a round of fetches) for a few events. Here a job
hands its events in and waits; a runner takes everything waiting (up to `max_events`) as one batch. Batches form by
themselves, as in the API: while runners are busy the jobs that arrive queue up for the next one, so a lone
notification waits for nothing and a burst costs one batch per runner at a time, not one per job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger(__name__)
Counts = dict[str, int]
# ctx of the first job in the batch, every event id, and the job that brought each one (for the timeline).
RunBatch = Callable[[dict[str, Any], list[int], dict[int, str | None]], Awaitable[Counts]]


@dataclass
class _Entry:
    ctx: dict[str, Any]
    event_ids: list[int]
    done: asyncio.Future[Counts] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def _observed(done: asyncio.Future[Counts]) -> None:
    """No one waits for a cancelled job's batch any more: its failure is logged by the batch, not by asyncio."""
    if not done.cancelled():
        done.exception()


class Batcher:
    """`runners` batches at a time; `aclose()` when the worker stops (it cancels them, and they give back)."""

    def __init__(self, run: RunBatch, *, runners: int, max_events: int) -> None:
        self._run = run
        self._runners = runners
        self._max_events = max_events
        self._waiting: list[_Entry] = []
        self._wakeup: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def submit(self, ctx: dict[str, Any], event_ids: list[int]) -> Counts:
        """Run these events in the next batch; returns that batch's counts, or raises what the batch raised."""
        if not self._tasks:
            self._wakeup = asyncio.Event()
            self._tasks = [asyncio.create_task(self._runner(), name=f"batch-runner-{n}") for n in range(self._runners)]
        assert self._wakeup is not None
        entry = _Entry(ctx, event_ids)
        self._waiting.append(entry)
        self._wakeup.set()
        try:
            return await asyncio.shield(entry.done)
        except asyncio.CancelledError:
            # The job was cancelled (its timeout, or SIGTERM past the grace). Not taken yet: its events stay queued
            # for the job's next run. Taken: the batch runs on; if it is stopped too, it gives the events back.
            with contextlib.suppress(ValueError):
                self._waiting.remove(entry)
            entry.done.add_done_callback(_observed)
            raise

    async def _runner(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            taken: list[_Entry] = []
            size = 0
            while self._waiting and (not taken or size + len(self._waiting[0].event_ids) <= self._max_events):
                entry = self._waiting.pop(0)
                taken.append(entry)
                size += len(entry.event_ids)
            if not self._waiting:
                self._wakeup.clear()
            if taken:
                await self._run_entries(taken)

    async def _run_entries(self, taken: list[_Entry]) -> None:
        job_of = {event_id: e.ctx.get("job_id") for e in taken for event_id in e.event_ids}
        try:
            counts = await self._run(taken[0].ctx, list(job_of), job_of)
        except asyncio.CancelledError:
            for entry in taken:
                entry.done.cancel()
            raise
        except Exception as exc:
            for entry in taken:
                if not entry.done.done():
                    entry.done.set_exception(exc)
            return
        for entry in taken:
            if not entry.done.done():
                entry.done.set_result(counts)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for entry in self._waiting:
            entry.done.cancel()
        self._waiting.clear()
