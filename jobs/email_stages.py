"""What the classify and act stages share: claiming a try, recording it, and the one failure policy."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from arq import Retry
from sqlalchemy.ext.asyncio import AsyncSession

from db import emails, grants, stage_runs
from db.models import Email
from db.states import PipelineState, Stage, StageRunStatus
from db.uow import read_session, unit_of_work
from jobs import failures
from jobs.context import JobContext
from jobs.errors import Throttled
from jobs.failures import Failure
from jobs.grant_calls import defer_for

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class StageCall:
    """One run of an email's stage: what every stage body is given (jobs/chain.py builds it, as a job or inline)."""

    jc: JobContext
    email_id: int
    job_id: str | None  # the job it runs in: its own, or the one that runs the chain inline (the timeline says so)
    force: bool = False  # run it even if the email is past it (a forced replay)


StageBody = Callable[[StageCall], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Claimed:
    email: Email
    run_id: int
    log: Any
    stage: Stage
    started: float


async def claim(call: StageCall, stage: Stage) -> Claimed | None:
    """Start a counted try of the stage; None when the email does not wait for it (done, dead, parked, gone)."""
    email_id = call.email_id
    async with unit_of_work(call.jc.sessionmaker) as session:
        email = await emails.claim_stage(session, email_id, stage=stage, force=call.force)
        if email is None:
            return None
        run_id = await stage_runs.start(
            session,
            stage=stage,
            attempt=email.stage_attempts,
            email_id=email_id,
            grant_id=email.grant_id,
            job_id=call.job_id,
        )
    bound = log.bind(stage=stage, email_id=email_id, grant_id=email.grant_id, job_id=call.job_id)
    return Claimed(email=email, run_id=run_id, log=bound, stage=stage, started=time.monotonic())


async def succeed(
    jc: JobContext, claimed: Claimed, *, to: PipelineState, detail: dict[str, Any], **columns: Any
) -> None:
    async with unit_of_work(jc.sessionmaker) as session:
        await emails.advance(session, claimed.email.id, to=to, **columns)
        await stage_runs.finish(session, claimed.run_id, status=StageRunStatus.SUCCEEDED, detail=detail)
    jc.metrics.inc("mailroom_jobs", stage=claimed.stage, outcome="succeeded")
    jc.metrics.observe("mailroom_stage_duration_seconds", time.monotonic() - claimed.started, stage=claimed.stage)
    if to is PipelineState.DONE and claimed.email.first_received_at is not None:
        acted_after = (datetime.now(UTC) - claimed.email.first_received_at).total_seconds()
        jc.metrics.observe("mailroom_webhook_to_acted_seconds", acted_after)
    claimed.log.info("stage.succeeded", next=to)


async def park(jc: JobContext, email_id: int, stage: str) -> str:
    async with unit_of_work(jc.sessionmaker) as session:
        await emails.park(session, email_id)
    log.info("stage.parked", stage=stage, email_id=email_id)
    return "parked"


async def give_back(jc: JobContext, claimed: Claimed, exc: Throttled) -> Retry:
    """Waiting for room under the grant's rate is not a failed try: the try goes back; the job waits (raise this)."""
    async with unit_of_work(jc.sessionmaker) as session:
        await emails.give_back_try(session, claimed.email.id)
        await stage_runs.finish(session, claimed.run_id, status=StageRunStatus.RETRYING, error=str(exc))
    return defer_for(exc)


async def record_failure(jc: JobContext, claimed: Claimed, exc: Exception) -> str:
    """The policy's verdict on the failed try, recorded; a retry raises arq.Retry with its delay."""
    return (await failures.record_failure(jc, EmailTry(claimed), exc)).value


@dataclass(frozen=True, slots=True)
class EmailTry:
    """A failed try of an email's classify or act stage (jobs/failures.py records it)."""

    claimed: Claimed

    @property
    def stage(self) -> str:
        return self.claimed.stage

    @property
    def attempt(self) -> int:
        return self.claimed.email.stage_attempts

    @property
    def grant_id(self) -> str | None:
        return self.claimed.email.grant_id

    @property
    def run_id(self) -> int:
        return self.claimed.run_id

    @property
    def log(self) -> Any:
        return self.claimed.log

    async def gone(self, session: AsyncSession, failure: Failure) -> None:
        email = self.claimed.email
        await emails.mark_missing(
            session, grant_id=email.grant_id, message_id=email.message_id, state_at=email.state_at
        )
        await stage_runs.finish(session, self.run_id, status=StageRunStatus.SKIPPED, error=failure.error)

    async def park(self, session: AsyncSession, failure: Failure) -> None:
        await emails.park(session, self.claimed.email.id)

    async def failed(self, session: AsyncSession, failure: Failure, *, dead: bool) -> None:
        await emails.stage_failed(session, self.claimed.email.id, error=failure.error, dead=dead)


async def may_call(jc: JobContext, grant_id: str) -> bool:
    async with read_session(jc.sessionmaker) as session:
        return await grants.may_call_nylas(session, grant_id)
