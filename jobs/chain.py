"""An email's chain, process -> classify -> act: how a stage's job runs it and carries the chain on.

The stage after a successful one runs at once in the same job while the job has time (`MAILROOM_CHAIN_INLINE`):
a queued job per stage costs about eight Redis round trips and a trip through arq's poll, for work that is a few
milliseconds of CPU (classify) or a few Nylas calls (act). Each stage still claims its own try, records its own
run and follows its own retry policy: a stage run inline that must retry, or that there is no time left for, is
queued as that stage's own job, exactly as if the chain had never run inline. A worker killed mid-chain leaves
the email waiting in its stage, where the sweeper finds it.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from arq import Retry

from core import tracing
from db import emails
from db.uow import read_session
from jobs import arq_storage
from jobs.context import JobContext
from jobs.email_stages import StageBody, StageCall
from jobs.enqueue import enqueue_stage, stage_job_id

log = structlog.get_logger(__name__)
NEXT = {"classify": "act", "act": "done"}
# Inline stages start only in the first quarter of the job's time, so the job ends well inside its timeout.
INLINE_SHARE = 0.25


async def run_as_job(ctx: dict[str, Any], body: StageBody, stage: str, email_id: int, force: bool) -> str:
    """A stage's job (classify_email.classify, act_on_email.act): the stage, then the rest of the chain."""
    started = time.monotonic()
    jc = JobContext.from_ctx(ctx)
    if await held(jc, stage, email_id):
        return "paused"  # the email waits at this stage; resuming queues it again (jobs/pausing.py)
    with tracing.span(f"mailroom.{stage}", attributes={"mailroom.email_id": email_id}):
        outcome = await body(StageCall(jc, email_id, ctx.get("job_id"), force))
    if outcome == "succeeded":
        await carry_on(ctx, NEXT[stage], email_id, started=started)
    return outcome


async def held(jc: JobContext, stage: str, email_id: int) -> bool:
    """Whether an operator's pause holds this email at this stage: the stage's, everything's, or its grant's (the
    email's grant is read only while some grant is paused)."""
    controls = await jc.pauses.current()
    if controls.stage(stage):
        return True
    if not controls.grants:
        return False
    async with read_session(jc.sessionmaker) as session:
        return controls.grant(await emails.grant_of(session, email_id))


async def carry_on(ctx: dict[str, Any], stage: str, email_id: int, *, started: float) -> None:
    """Run `stage` and the ones after it here while there is time; queue whatever is left."""
    jc = JobContext.from_ctx(ctx)
    budget = jc.settings.job_timeout * INLINE_SHARE
    while stage in jc.stages:
        if await held(jc, stage, email_id):
            return  # an operator paused it: the email waits at this stage until resumed
        if not jc.settings.chain_inline or time.monotonic() - started > budget:
            await enqueue_stage(jc.queue, stage, email_id)
            return
        job_id = stage_job_id(stage, email_id)
        hold_ms = int((jc.settings.job_timeout + 10) * 1000)
        if not await arq_storage.hold_in_progress(jc.queue, job_id, ms=hold_ms):
            # That stage is running already, as its own job or inline in another (two notifications of one message
            # arrive together): it carries the chain on. Its key is arq's own in-progress mark for the stage's job,
            # so neither arq nor another inline run starts the stage beside this one.
            return
        try:
            with tracing.span(f"mailroom.{stage}", attributes={"mailroom.email_id": email_id}):
                outcome = await jc.stages[stage](StageCall(jc, email_id, ctx.get("job_id")))
        except Retry as retry:
            # The stage recorded its failed try; its retry is its own job, not a re-run of the job we are in.
            await enqueue_stage(jc.queue, stage, email_id, defer_ms=retry.defer_score)
            return
        except Exception as exc:
            # It failed before it could claim a try (the database, say): its own job starts it over.
            log.warning("chain.inline_failed", stage=stage, email_id=email_id, error=f"{type(exc).__name__}: {exc}")
            await enqueue_stage(jc.queue, stage, email_id, defer_ms=int(jc.settings.retry_base_delay * 1000))
            return
        finally:
            await arq_storage.release_in_progress(jc.queue, job_id)
        if outcome != "succeeded":
            return
        stage = NEXT[stage]
