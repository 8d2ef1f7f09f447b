"""The dashboard's history: each API samples queue depth and the stage counters into PostgreSQL every
`MAILROOM_HISTORY_SECONDS`, and `/api/history` serves the last minutes of it, so the charts survive a page reload,
an API restart and a load balancer that sends each poll to a different API.

Every API samples; the interval's start is the row's key, so N APIs write one row (the first wins) and the history
goes on while any API runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from core import metrics
from db import history
from db.models import HistorySample
from db.uow import read_session, unit_of_work
from service import health
from service.admin import database, int_param, only_known
from service.auth import admin
from service.state import Resources

log = structlog.get_logger(__name__)

DEPTH = ("ready", "deferred", "running", "oldest_ready_age_s", "dead")
COUNTED = ("webhooks", "processed", "classified", "acted", "failed")


async def figures(resources: Resources) -> dict[str, Any]:
    """What one sample holds: the queue now, and the counters so far (rates are differences between samples)."""
    depth = await health.depth(resources)
    counters, _ = await resources.metrics.read()
    queue = depth["queue"]
    jobs = metrics.total(counters, "mailroom_jobs")
    done = {
        stage: metrics.total(counters, "mailroom_jobs", stage=stage, outcome="succeeded") for stage in metrics.STAGES
    }
    return {
        "ready": queue["ready"],
        "deferred": queue["deferred"],
        "running": queue["in_progress"],
        "oldest_ready_age_s": queue["oldest_ready_age_seconds"],
        "dead": depth["dead"]["events"] + depth["dead"]["emails"],
        "webhooks": metrics.total(counters, "mailroom_webhooks"),
        "processed": done["process"],
        "classified": done["classify"],
        "acted": done["act"],
        "failed": jobs - sum(done.values()),
    }


class HistorySampler:
    """Started and stopped by the API's lifespan; a failed sample is a gap in the charts, never an API error."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources
        self._period = resources.settings.history_seconds
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        if self._period:
            self._task = asyncio.create_task(self._sample_forever())

    async def aclose(self) -> None:
        # Told to stop, not cancelled: a cancel inside a transaction or a Redis pipeline can strand its connection.
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def sample(self) -> bool:
        """One sample for the current interval; True when this API wrote it."""
        now = time.time()
        at = datetime.fromtimestamp(now - now % self._period, UTC)
        found = await figures(self._resources)
        keep = timedelta(hours=self._resources.settings.history_keep_hours)
        async with unit_of_work(self._resources.sessionmaker) as session:
            wrote = await history.record(session, at=at, figures=found)
            if wrote:
                await history.prune(session, before=at - keep)
        return wrote

    async def _sample_forever(self) -> None:
        while not self._stopping.is_set():
            # Sleep to the next interval's start, so every API samples the same moments.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._period - time.time() % self._period)
            if self._stopping.is_set():
                return
            try:
                await self.sample()
            except Exception as exc:  # a sample is never worth the API: a failed one is a gap in the charts
                if not self._failing:
                    log.warning("history.sample_failed", error=f"{type(exc).__name__}: {exc}")
                self._failing = True
            else:
                if self._failing:
                    log.info("history.sampling_again")
                self._failing = False


def columns(samples: list[HistorySample], period: int) -> dict[str, Any]:
    """The samples as uPlot draws them: one list per series, times in epoch seconds, rates per second.

    A missing interval (no API sampled) becomes a null point so the line breaks there instead of drawing a slope
    across it; a counter that went down (Redis lost the metrics) gives no rate for that interval."""
    series: dict[str, list[float | None]] = {name: [] for name in ("t", *DEPTH, *COUNTED)}
    previous: HistorySample | None = None
    for sample in samples:
        t = sample.at.timestamp()
        if previous is not None and t - previous.at.timestamp() > 2.5 * period:
            series["t"].append(previous.at.timestamp() + period)
            for name in (*DEPTH, *COUNTED):
                series[name].append(None)
            previous = None
        series["t"].append(t)
        for name in DEPTH:
            series[name].append(getattr(sample, name))
        for name in COUNTED:
            if previous is None:
                series[name].append(None)
                continue
            change = getattr(sample, name) - getattr(previous, name)
            elapsed = t - previous.at.timestamp()
            series[name].append(round(change / elapsed, 3) if change >= 0 and elapsed > 0 else None)
        previous = sample
    return series


@admin
async def endpoint(request: Request) -> Response:
    """The last `?minutes=` (default 60, at most the hours kept) of samples, as columns."""
    resources: Resources = request.state.resources
    settings = resources.settings
    only_known(request, "minutes")
    minutes = int_param(request.query_params.get("minutes"), "minutes", 60, high=settings.history_keep_hours * 60)
    start = datetime.now(UTC) - timedelta(minutes=minutes or 60)
    with database():
        async with read_session(resources.sessionmaker) as session:
            samples = await history.since(session, start)
    return JSONResponse(
        {
            "interval_seconds": settings.history_seconds,
            "minutes": minutes,
            **columns(samples, settings.history_seconds or 10),
        }
    )
