"""The classify stage: run the configured classifier on a stored email, as its own job or inline (jobs/chain.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from db.states import PipelineState, Stage
from jobs import chain, email_stages
from jobs.classifier import EmailView
from jobs.message_columns import view_source


async def classify(ctx: dict[str, Any], email_id: int, force: bool = False) -> str:
    """Job: the classify stage, then the rest of the chain."""
    return await chain.run_as_job(ctx, classify_stage, Stage.CLASSIFY, email_id, force)


async def classify_stage(call: email_stages.StageCall) -> str:
    jc = call.jc
    claimed = await email_stages.claim(call, Stage.CLASSIFY)
    if claimed is None:
        return "skipped"
    try:
        email = claimed.email
        result = jc.classifier.classify(
            EmailView.from_message(view_source(email.raw, email.body), folders=email.folders)
        )
        await email_stages.succeed(
            jc,
            claimed,
            to=PipelineState.ACT,
            detail={"class": result.label, "rule": result.rule},
            classification=result.label,
            classified_at=datetime.now(UTC),
        )
    except Exception as exc:
        return await email_stages.record_failure(jc, claimed, exc)
    return "succeeded"
