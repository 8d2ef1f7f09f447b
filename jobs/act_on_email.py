"""The act stage: carry out the class's actions through Nylas, each at most once.

Every action is planned under an idempotency key. Before a call its row is committed as `executing`, so a
crash leaves "maybe done" behind, never "not tried". Setting state (folders, read, starred) is harmless to repeat;
a draft or a forward is not, so those carry their key in Nylas metadata and are looked up before any second try.
"""

from __future__ import annotations

import hashlib
from typing import Any

from db import actions, stage_runs
from db.models import Action, Email
from db.states import ActionStatus, PipelineState, Stage, StageRunStatus
from db.uow import unit_of_work
from jobs import chain, email_stages
from jobs.classifier import EmailView
from jobs.context import JobContext
from jobs.errors import PermanentError, Throttled
from jobs.grant_calls import throttled
from jobs.message_columns import view_source
from jobs.nylas_client import METADATA_KEY
from jobs.policy import NOT_REPEATABLE, decide


async def act(ctx: dict[str, Any], email_id: int, force: bool = False) -> str:
    """Job: the act stage."""
    return await chain.run_as_job(ctx, act_stage, Stage.ACT, email_id, force)


async def act_stage(call: email_stages.StageCall) -> str:
    jc = call.jc
    claimed = await email_stages.claim(call, Stage.ACT)
    if claimed is None:
        return "skipped"
    try:
        return await _act(jc, claimed)
    except Throttled as exc:
        raise await email_stages.give_back(jc, claimed, exc) from exc
    except Exception as exc:
        return await email_stages.record_failure(jc, claimed, exc)


async def _act(jc: JobContext, claimed: email_stages.Claimed) -> str:
    email = claimed.email
    view = EmailView.from_message(view_source(email.raw, email.body), folders=email.folders)
    planned = decide(
        jc.rules, label=email.classification or "", grant_id=email.grant_id, message_id=email.message_id, email=view
    )
    async with unit_of_work(jc.sessionmaker) as session:
        for plan in planned:
            await actions.plan(
                session,
                email_id=email.id,
                grant_id=email.grant_id,
                kind=plan.kind,
                params=plan.params,
                idempotency_key=plan.idempotency_key,
            )
        todo = [
            a
            for a in await actions.for_email(session, email.id)
            if a.status not in (ActionStatus.DONE, ActionStatus.DRY_RUN)
        ]
    if todo and not jc.settings.actions_dry_run and not await email_stages.may_call(jc, email.grant_id):
        await email_stages.park(jc, email.id, "act")
        await _release(jc, claimed)
        return "parked"
    for action in todo:
        await _carry_out(jc, email, view, action)
    await email_stages.succeed(
        jc, claimed, to=PipelineState.DONE, detail={"actions": len(planned), "carried_out": len(todo)}
    )
    return "succeeded"


async def _release(jc: JobContext, claimed: email_stages.Claimed) -> None:
    async with unit_of_work(jc.sessionmaker) as session:
        await stage_runs.finish(session, claimed.run_id, status=StageRunStatus.PARKED, error="grant paused")


async def _carry_out(jc: JobContext, email: Email, view: EmailView, action: Action) -> None:
    if jc.settings.actions_dry_run:
        async with unit_of_work(jc.sessionmaker) as session:
            await actions.mark_done(session, action.id, status=ActionStatus.DRY_RUN, result={"would": action.params})
        return
    tag = hashlib.sha256(action.idempotency_key.encode()).hexdigest()[:32]
    if action.status == ActionStatus.EXECUTING and action.kind in NOT_REPEATABLE:
        # A previous try may have gone through before it could record so: ask Nylas before doing it again.
        found = await throttled(
            jc,
            email.grant_id,
            lambda: jc.nylas.find_tagged(email.grant_id, drafts=action.kind == "draft_reply", tag=tag),
        )
        if found is not None:
            async with unit_of_work(jc.sessionmaker) as session:
                await actions.mark_done(session, action.id, status=ActionStatus.DONE, result={"id": found.get("id")})
            return
    async with unit_of_work(jc.sessionmaker) as session:
        await actions.mark_executing(session, action.id)
    try:
        result = await throttled(jc, email.grant_id, lambda: _call(jc, email, view, action, tag))
    except PermanentError as exc:
        if exc.status_code not in (401, 403, 404):
            async with unit_of_work(jc.sessionmaker) as session:
                await actions.mark_failed(session, action.id, error=str(exc))
        raise
    async with unit_of_work(jc.sessionmaker) as session:
        await actions.mark_done(session, action.id, status=ActionStatus.DONE, result={"id": result.get("id")})


async def _call(jc: JobContext, email: Email, view: EmailView, action: Action, tag: str) -> dict[str, Any]:
    grant_id, message_id, params = email.grant_id, email.message_id, action.params
    match action.kind:
        case "move":
            return await jc.nylas.update_message(grant_id, message_id, {"folders": [params["folder"]]})
        case "label":
            folders = list(email.folders or [])
            if params["folder"] not in folders:
                folders.append(params["folder"])
            return await jc.nylas.update_message(grant_id, message_id, {"folders": folders})
        case "mark_read":
            return await jc.nylas.update_message(grant_id, message_id, {"unread": False})
        case "mark_unread":
            return await jc.nylas.update_message(grant_id, message_id, {"unread": True})
        case "star":
            return await jc.nylas.update_message(grant_id, message_id, {"starred": True})
        case "draft_reply":
            recipients = email.reply_to or email.from_ or []
            draft = {
                "subject": params["subject"],
                "body": params["body"],
                "to": [{"email": r["email"], **({"name": r["name"]} if r.get("name") else {})} for r in recipients],
                "reply_to_message_id": message_id,
                "metadata": {METADATA_KEY: tag},
            }
            return await jc.nylas.create_draft(grant_id, draft)
        case "forward":
            message = {
                "subject": f"Fwd: {view.subject}",
                "body": (params.get("note") or "") + "<br><br>---------- Forwarded message ----------<br>" + view.body,
                "to": [{"email": params["to"]}],
                "metadata": {METADATA_KEY: tag},
            }
            return await jc.nylas.send_message(grant_id, message)
    raise PermanentError(f"unknown action kind {action.kind!r}")
