"""Operators' controls on the admin API: pause and resume (everything, a grant, a stage), a grant's Nylas call rate,
and the jobs waiting in the queue with their cancel. Each is in the audit trail (jobs/pausing.py,
jobs/job_control.py)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from jobs import job_control, pausing
from service.admin import BadRequest, body_bool, body_str, database, int_param, json_body, only_known, time_param
from service.auth import admin
from service.state import Resources


async def _scope_body(request: Request) -> tuple[str, str]:
    body = await json_body(request)
    if not isinstance(body, dict) or set(body) - {"scope", "target"}:
        raise BadRequest('the body must be {"scope": "all"|"grant"|"stage", "target": "..."}')
    scope, target = body_str(body, "scope") or "", body_str(body, "target") or ""
    try:
        pausing.check_scope(scope, target)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    return scope, target


@admin
async def pause(request: Request) -> Response:
    """Body: {"scope": "all"|"grant"|"stage", "target": grant id or stage}. Every worker holds it within seconds."""
    resources: Resources = request.state.resources
    scope, target = await _scope_body(request)
    with database():
        done = await pausing.pause(resources.sessionmaker, scope=scope, target=target, who=request.state.operator)
    return JSONResponse({"paused": done, "scope": scope, "target": target})


@admin
async def resume(request: Request) -> Response:
    """Body as for /pause. What waited is queued again; 409 when it was not paused."""
    resources: Resources = request.state.resources
    scope, target = await _scope_body(request)
    with database():
        queued = await pausing.resume(
            resources.sessionmaker,
            resources.queue,
            scope=scope,
            target=target,
            who=request.state.operator,
            batch_worker=resources.settings.batch_worker,
        )
    if queued is None:
        return JSONResponse({"error": "not_paused", "detail": f"{scope} {target} was not paused".strip()}, 409)
    return JSONResponse({"resumed": True, "scope": scope, "target": target, "queued": queued})


@admin
async def grant_rate(request: Request) -> Response:
    """Body: {"grant": G, "rate": calls a second, or null for the default}. Every worker holds it within seconds."""
    resources: Resources = request.state.resources
    body = await json_body(request)
    if not isinstance(body, dict) or set(body) != {"grant", "rate"}:
        raise BadRequest('the body must be {"grant": "...", "rate": 1-10000 or null}')
    grant_id, rate = body_str(body, "grant") or "", body["rate"]
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)  # JSON's 2.0 is a whole number too
    if rate is not None and (not isinstance(rate, int) or isinstance(rate, bool)):
        raise BadRequest("rate must be a whole number of calls a second, or null")
    try:
        with database():
            await pausing.set_rate(resources.sessionmaker, grant_id=grant_id, rate=rate, who=request.state.operator)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    return JSONResponse({"grant": grant_id, "rate": rate, "default": resources.settings.nylas_rate_per_grant})


STATE_GROUPS = {
    "all": job_control.VIEW_STATES,
    "waiting": ("ready", "scheduled"),
    **{state: (state,) for state in job_control.VIEW_STATES},
}


def _job_filter(values: dict[str, Any], *, state: str) -> job_control.JobFilter:
    return job_control.JobFilter(
        state=state,
        function=values.get("function") or None,
        grant=values.get("grant") or None,
        error=values.get("error") or None,
        since=time_param(values.get("since")),
        until=time_param(values.get("until")),
    )


@admin
async def list_jobs(request: Request) -> Response:
    """Jobs: `?state=running|ready|scheduled|waiting|finished|all` (default all; scheduled: deferred retries and
    throttled work; finished: the results arq keeps of the last 1,000), `?function=`, `?grant=`, `?error=` (of the
    event or email the job stands for), `?since=`/`?until=` (queued), `?offset=`, `?limit=` (at most 500). Running
    first, then ready, scheduled, finished. Arguments are ids, never mail content."""
    resources: Resources = request.state.resources
    only_known(request, "state", "function", "grant", "error", "since", "until", "offset", "limit")
    q = request.query_params
    state = q.get("state") or "all"
    if state not in STATE_GROUPS:
        raise BadRequest(f"state must be one of {', '.join(STATE_GROUPS)}")
    limit = int_param(q.get("limit"), "limit", 100, high=500) or 100
    offset = int_param(q.get("offset"), "offset", 0, low=0, high=100_000) or 0
    with database():
        found = await job_control.browse(
            resources.sessionmaker,
            resources.queue,
            resources.settings.queue_name,
            states=STATE_GROUPS[state],
            chosen=_job_filter(dict(q), state="waiting"),
            offset=offset,
            limit=limit,
        )
    return JSONResponse(found)


@admin
async def cancel_matching(request: Request) -> Response:
    """Body: {"state": "ready"|"scheduled"|"waiting", "function", "grant", "error", "since", "until", "dry_run"}:
    cancels every waiting job that matches, as GET /jobs lists them (at most 2,000 a call); the dry run (the
    default) counts them by function, changing nothing."""
    resources: Resources = request.state.resources
    body = await json_body(request)
    fields = {"state", "function", "grant", "error", "since", "until", "dry_run"}
    if not isinstance(body, dict) or set(body) - fields:
        raise BadRequest(f"the body is a JSON object of {', '.join(sorted(fields))}")
    # The filters may be null (no filter); the state, when given, must be one of the three.
    text = {key: body_str(body, key) if body.get(key) is not None else None for key in fields - {"dry_run", "state"}}
    state = body_str(body, "state")
    state = "waiting" if state is None else state
    if state not in job_control.WAITING_STATES:
        raise BadRequest("state must be ready, scheduled or waiting (a running job cannot be cancelled)")
    dry_run = body_bool(body, "dry_run", True)  # as for /replay: counting is the default, changing is asked for
    with database():
        found = await job_control.cancel_matching(
            resources.sessionmaker,
            resources.queue,
            resources.settings.queue_name,
            chosen=_job_filter(text, state=state),
            who=request.state.operator,
            dry_run=dry_run,
        )
    return JSONResponse(found)


@admin
async def cancel_job(request: Request) -> Response:
    """Cancel a queued or deferred job; what it stood for is marked so no sweep brings it back (409 otherwise)."""
    resources: Resources = request.state.resources
    job_id = request.path_params["job_id"]
    try:
        with database():
            done = await job_control.cancel(
                resources.sessionmaker,
                resources.queue,
                resources.settings.queue_name,
                job_id,
                who=request.state.operator,
            )
    except job_control.NotCancellable as exc:
        return JSONResponse({"error": "not_cancellable", "detail": str(exc)}, status_code=409)
    return JSONResponse(done)
