"""One retry policy for every stage: what a failure means (retry, dead letter, park, message gone)."""

from __future__ import annotations

import asyncio
import traceback
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from arq import Retry
from sqlalchemy.ext.asyncio import AsyncSession

from core.metrics import Metrics
from core.settings import Settings
from db import grants, stage_runs
from db.errors import DatabaseError
from db.states import StageRunStatus
from db.uow import unit_of_work
from jobs.backoff import retry_delay
from jobs.errors import GrantPaused, PermanentError, TransientError

if TYPE_CHECKING:
    from jobs.context import JobContext


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
        status=StageRunStatus.DEAD if dead else StageRunStatus.RETRYING,
        error=failure.error,
        traceback=failure.traceback if dead else None,
        detail=None if dead else {"retry_in_s": round(failure.delay, 3)},
    )


class FailedTry(Protocol):
    """What failed one try: an event's process stage or an email's classify/act. The policy and its bookkeeping are
    the same for both; only where the subject's own state is written differs."""

    @property
    def stage(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def grant_id(self) -> str | None: ...
    @property
    def run_id(self) -> int: ...
    @property
    def log(self) -> Any: ...  # a bound structlog logger

    async def gone(self, session: AsyncSession, failure: Failure) -> None:
        """Nylas says the message no longer exists: mark it so (and finish the run as skipped)."""

    async def park(self, session: AsyncSession, failure: Failure) -> None:
        """The grant's credentials were refused: the subject waits for the grant to come back."""

    async def failed(self, session: AsyncSession, failure: Failure, *, dead: bool) -> None:
        """A try used up: retried later, or a dead letter when `dead`."""


async def record_failure(jc: JobContext, failed: FailedTry, exc: Exception) -> Verdict:
    """The policy's verdict on a failed try, written in one transaction and counted. A retry raises arq.Retry with
    its delay (the caller's job is deferred); every other verdict is returned."""
    failure = judge(exc, attempt=failed.attempt, settings=jc.settings)
    count(jc.metrics, failed.stage, failure.verdict)
    async with unit_of_work(jc.sessionmaker) as session:
        match failure.verdict:
            case Verdict.MISSING:
                await failed.gone(session, failure)
            case Verdict.PARK:
                assert failed.grant_id is not None, "only a grant's call can be refused for its credentials"
                await grants.pause(session, failed.grant_id, reason=failure.error)
                await failed.park(session, failure)
                await stage_runs.finish(session, failed.run_id, status=StageRunStatus.PARKED, error=failure.error)
            case Verdict.RETRY | Verdict.DEAD:
                await failed.failed(session, failure, dead=failure.verdict is Verdict.DEAD)
                await finish_failed_run(session, failed.run_id, failure)
    # Log names as before the two recorders were one: `event.*` for notifications, `stage.*` for emails' stages.
    prefix = "event." if failed.stage == "process" else "stage."
    if failure.verdict is Verdict.RETRY:
        failed.log.warning(
            prefix + "retrying",
            error=failure.error,
            attempt=failed.attempt,
            defer_s=round(failure.delay, 3),
        )
        raise Retry(defer=failure.delay) from exc
    level = failed.log.error if failure.verdict is Verdict.DEAD else failed.log.warning
    level(prefix + failure.verdict.value, error=failure.error, attempt=failed.attempt)
    return failure.verdict
