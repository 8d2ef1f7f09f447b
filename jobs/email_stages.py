"""What the classify and act stages share: claiming a try, recording it, and the one failure policy."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from arq import Retry

from db import emails, grants, stage_runs
from db.models import Email
from db.uow import read_session, unit_of_work
from jobs.context import JobContext
from jobs.errors import Throttled
from jobs.failures import Verdict, count, finish_failed_run, judge
from jobs.grant_calls import defer_for

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Claimed:
    email: Email
    run_id: int
    log: Any
    stage: str
    started: float


async def claim(jc: JobContext, ctx: dict[str, Any], email_id: int, stage: str, *, force: bool) -> Claimed | None:
    """Start a counted try of the stage; None when the email does not wait for it (done, dead, parked, gone)."""
    async with unit_of_work(jc.sessionmaker) as session:
        email = await emails.claim_stage(session, email_id, stage=stage, force=force)
        if email is None:
            return None
        run_id = await stage_runs.start(
            session,
            stage=stage,
            attempt=email.stage_attempts,
            email_id=email_id,
            grant_id=email.grant_id,
            job_id=ctx.get("job_id"),
        )
    bound = log.bind(stage=stage, email_id=email_id, grant_id=email.grant_id, job_id=ctx.get("job_id"))
    return Claimed(email=email, run_id=run_id, log=bound, stage=stage, started=time.monotonic())


async def succeed(jc: JobContext, claimed: Claimed, *, to: str, detail: dict[str, Any], **columns: Any) -> None:
    async with unit_of_work(jc.sessionmaker) as session:
        await emails.advance(session, claimed.email.id, to=to, **columns)
        await stage_runs.finish(session, claimed.run_id, status="succeeded", detail=detail)
    jc.metrics.inc("mailroom_jobs", stage=claimed.stage, outcome="succeeded")
    jc.metrics.observe("mailroom_stage_duration_seconds", time.monotonic() - claimed.started, stage=claimed.stage)
    if to == "done" and claimed.email.first_received_at is not None:
        acted_after = (datetime.now(UTC) - claimed.email.first_received_at).total_seconds()
        jc.metrics.observe("mailroom_webhook_to_acted_seconds", acted_after)
    claimed.log.info("stage.succeeded", next=to)


async def park(jc: JobContext, email_id: int, stage: str) -> str:
    async with unit_of_work(jc.sessionmaker) as session:
        await emails.park(session, email_id)
    log.info("stage.parked", stage=stage, email_id=email_id)
    return "parked"


@asynccontextmanager
async def failures_handled(jc: JobContext, claimed: Claimed, stage: str) -> AsyncIterator[None]:
    """Turn whatever the stage raises into the policy's outcome: retry later, dead letter, park, or gone."""
    try:
        yield
    except Throttled as exc:
        # Waiting for room under the grant's rate is not a failed try: give the try back.
        async with unit_of_work(jc.sessionmaker) as session:
            await emails.give_back_try(session, claimed.email.id)
            await stage_runs.finish(session, claimed.run_id, status="retrying", error=str(exc))
        raise defer_for(exc) from exc
    except Exception as exc:
        await _record_failure(jc, claimed, stage, exc)


async def _record_failure(jc: JobContext, claimed: Claimed, stage: str, exc: Exception) -> None:
    email = claimed.email
    failure = judge(exc, attempt=email.stage_attempts, settings=jc.settings)
    count(jc.metrics, stage, failure.verdict)
    async with unit_of_work(jc.sessionmaker) as session:
        if failure.verdict is Verdict.MISSING:
            await emails.mark_missing(
                session, grant_id=email.grant_id, message_id=email.message_id, state_at=email.state_at
            )
            await stage_runs.finish(session, claimed.run_id, status="skipped", error=failure.error)
        elif failure.verdict is Verdict.PARK:
            await grants.pause(session, email.grant_id, reason=failure.error)
            await emails.park(session, email.id)
            await stage_runs.finish(session, claimed.run_id, status="parked", error=failure.error)
        else:
            dead = failure.verdict is Verdict.DEAD
            await emails.stage_failed(session, email.id, error=failure.error, dead=dead)
            await finish_failed_run(session, claimed.run_id, failure)
    if failure.verdict is Verdict.RETRY:
        claimed.log.warning("stage.retrying", error=failure.error, defer_s=round(failure.delay, 3))
        raise Retry(defer=failure.delay) from exc
    claimed.log.warning("stage." + failure.verdict.value, error=failure.error, attempt=email.stage_attempts)


async def may_call(jc: JobContext, grant_id: str) -> bool:
    async with read_session(jc.sessionmaker) as session:
        return await grants.may_call_nylas(session, grant_id)
