"""One retry policy for every stage: what a failure means (retry, dead letter, park, message gone)."""

from __future__ import annotations

import asyncio
import traceback
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from core.metrics import Metrics
from core.settings import Settings
from db import stage_runs
from db.errors import DatabaseError
from jobs.backoff import retry_delay
from jobs.errors import GrantPaused, PermanentError, TransientError


class Verdict(StrEnum):
    RETRY = "retry"
    DEAD = "dead"
    PARK = "park"  # the grant's credentials were refused: wait for grant.updated
    MISSING = "missing"  # Nylas answered 404: the message is gone


@dataclass(frozen=True, slots=True)
class Failure:
    verdict: Verdict
    error: str
    traceback: str | None
    delay: float = 0.0


def judge(exc: BaseException, *, attempt: int, settings: Settings) -> Failure:
    """Pure: the policy. Transient failures (and bugs) retry with backoff until the tries run out."""
    error = f"{type(exc).__name__}: {exc}"
    trace = "".join(traceback.format_exception(exc))
    if isinstance(exc, GrantPaused):
        return Failure(Verdict.PARK, error, None)
    if isinstance(exc, PermanentError):
        if exc.status_code == 404:
            return Failure(Verdict.MISSING, error, None)
        if exc.status_code in (401, 403):
            return Failure(Verdict.PARK, error, None)
        return Failure(Verdict.DEAD, error, trace)
    transient = isinstance(exc, (TransientError, DatabaseError, TimeoutError, asyncio.TimeoutError))
    retry_after = exc.retry_after if isinstance(exc, TransientError) else None
    if attempt >= settings.job_max_tries:
        return Failure(Verdict.DEAD, error if transient else f"{error} (unexpected)", trace)
    delay = retry_delay(attempt, base=settings.retry_base_delay, cap=settings.retry_max_delay, retry_after=retry_after)
    return Failure(Verdict.RETRY, error, trace, delay)


def count(metrics: Metrics, stage: str, verdict: Verdict) -> None:
    """Every failed run is counted by what the policy made of it."""
    metrics.inc("mailroom_jobs", stage=stage, outcome=verdict.value)
    if verdict is Verdict.RETRY:
        metrics.inc("mailroom_retries", stage=stage)
    elif verdict is Verdict.DEAD:
        metrics.inc("mailroom_dead_letters", stage=stage)


async def finish_failed_run(session: AsyncSession, run_id: int, failure: Failure) -> None:
    """Record a run that will be retried (with the delay) or is dead (with the traceback)."""
    dead = failure.verdict is Verdict.DEAD
    await stage_runs.finish(
        session,
        run_id,
        status="dead" if dead else "retrying",
        error=failure.error,
        traceback=failure.traceback if dead else None,
        detail=None if dead else {"retry_in_s": round(failure.delay, 3)},
    )
