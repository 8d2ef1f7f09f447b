"""The admin API (bearer token): jobs, events with their timelines, and replays. Email content is masked
unless the caller asks for it with `reveal=true`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from db import actions, audit, emails, erasure, stage_runs, webhook_events
from db.errors import DatabaseError, translate_errors
from db.models import Email, StageRun, WebhookEvent
from db.uow import read_session, unit_of_work
from jobs import arq_storage
from jobs.replay import ReplayFilter, replay
from service.auth import admin
from service.body_limits import ADMIN_BODY_LIMIT, read_limited
from service.errors import DatabaseUnavailable, ServiceError
from service.state import Resources


class NotFound(ServiceError):
    """No such thing."""

    status_code = 404
    code = "not_found"


class BadRequest(ServiceError):
    """The request's parameters are not valid."""

    status_code = 400
    code = "bad_request"


def mask(value: str | None) -> str | None:
    if not value:
        return value
    return value[0] + "•" * min(len(value) - 1, 12)


def time_param(value: str | None) -> datetime | None:
    """An ISO 8601 time (UTC when no offset is given), between the years 1 and 9999 once in UTC: a time whose offset
    carries it past either end cannot be sent to PostgreSQL, and must be a 400, not a 503."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise BadRequest(f"not an ISO 8601 time between the years 1 and 9999 (UTC): {value!r}") from exc


MAX_ID = 2**63 - 1  # PostgreSQL's bigint
UNAVAILABLE = "PostgreSQL is unavailable; try again"


@contextmanager
def database() -> Iterator[None]:
    """Database failures inside the block answer 503, not 500."""
    try:
        with translate_errors():
            yield
    except DatabaseError as exc:
        raise DatabaseUnavailable(UNAVAILABLE) from exc


def int_param(
    value: str | None, name: str, default: int | None = None, *, low: int = 1, high: int = MAX_ID
) -> int | None:
    """A parameter, when given, must be an integer in range: a clear 400, never a database error."""
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise BadRequest(f"{name} must be an integer") from exc
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return number


def only_known(request: Request, *names: str) -> None:
    """A misspelt filter (`?stauts=dead`) must not silently widen a listing or a replay: refuse it."""
    unknown = sorted(set(request.query_params.keys()) - set(names))
    if unknown:
        raise BadRequest(f"unknown parameter{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    if any("\x00" in value for value in request.query_params.values()):
        raise BadRequest("parameters must not contain U+0000")


def flag(value: str | None, name: str) -> bool:
    if value is None or value in ("0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise BadRequest(f"{name} must be true or false")


def _event_id(request: Request) -> int:
    """An id no event can have (not an integer, or out of bigint's range) is simply not found."""
    raw = request.path_params["event_id"]
    try:
        event_id = int(raw)
    except ValueError as exc:
        raise NotFound(f"no event {raw!r}") from exc
    if not 1 <= event_id <= MAX_ID:
        raise NotFound(f"no event {event_id}")
    return event_id


async def json_body(request: Request) -> Any:
    """The request's JSON (`{}` when empty), or a 400 that says the body must be a JSON object."""
    try:
        return orjson.loads(await read_limited(request, ADMIN_BODY_LIMIT) or b"{}")
    except orjson.JSONDecodeError as exc:
        raise BadRequest("the body must be a JSON object") from exc


def body_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if key in body and not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    if value is not None and "\x00" in value:
        raise BadRequest(f"{key} must not contain U+0000")
    return value


def body_bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false")
    return value


def event_summary(event: WebhookEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "notification_id": event.notification_id,
        "type": event.type,
        "grant_id": event.grant_id,
        "object_id": event.object_id,
        "status": event.status,
        "attempts": event.attempts,
        "last_error": event.last_error,
        "notified_at": event.notified_at.isoformat(),
        "received_at": event.received_at.isoformat(),
        "processed_at": event.processed_at.isoformat() if event.processed_at else None,
    }


def email_view(email: Email, *, reveal: bool) -> dict[str, Any]:
    shown = (lambda v: v) if reveal else mask
    return {
        "id": email.id,
        "grant_id": email.grant_id,
        "message_id": email.message_id,
        "subject": shown(email.subject),
        "from": shown(email.from_email),
        "snippet": shown(email.snippet),
        "classification": email.classification,
        "pipeline_state": email.pipeline_state,
        "dead_at": email.dead_at.isoformat() if email.dead_at else None,
        "parked_at": email.parked_at.isoformat() if email.parked_at else None,
        "missing_at": email.missing_at.isoformat() if email.missing_at else None,
        "deleted_at": email.deleted_at.isoformat() if email.deleted_at else None,
        "last_error": email.last_error,
    }


def run_view(run: StageRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "stage": run.stage,
        "attempt": run.attempt,
        "status": run.status,
        "job_id": run.job_id,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "error": run.error,
        "traceback": run.traceback,
        "detail": run.detail,
    }


async def event_and_email(resources: Resources, event_id: int) -> tuple[WebhookEvent, Email | None]:
    """The event (404 if none) and, for a message notification, the email it is about."""
    with database():
        async with read_session(resources.sessionmaker) as session:
            event = await webhook_events.get(session, event_id)
            if event is None:
                raise NotFound(f"no event {event_id}")
            email = (
                await emails.get(session, grant_id=event.grant_id, message_id=event.object_id)
                if event.grant_id and event.object_id and event.type.startswith("message.")
                else None
            )
    return event, email


@admin
async def job_status(request: Request) -> Response:
    resources: Resources = request.state.resources
    job_id = request.path_params["job_id"]
    answer = await arq_storage.status(resources.queue, resources.settings.queue_name, job_id)
    return JSONResponse(answer, status_code=404 if answer["status"] == "not_found" else 200)


@admin
async def list_events(request: Request) -> Response:
    resources: Resources = request.state.resources
    q = request.query_params
    only_known(request, "status", "type", "grant", "q", "since", "until", "before", "limit")
    limit = int_param(q.get("limit"), "limit", 50, high=500) or 50
    since, until, before = time_param(q.get("since")), time_param(q.get("until")), int_param(q.get("before"), "before")
    with database():
        async with read_session(resources.sessionmaker) as session:
            found = await webhook_events.search(
                session,
                status=q.get("status") or None,
                type_prefix=q.get("type") or None,
                grant_id=q.get("grant") or None,
                since=since,
                until=until,
                text=q.get("q") or None,
                before_id=before,
                limit=limit,
            )
            # The email's own end: an event `processed` whose email died at act must not look done.
            keys = [
                (e.grant_id, e.object_id) for e in found if e.grant_id and e.object_id and e.type.startswith("message.")
            ]
            states = await emails.end_states(session, keys)
    items = [{**event_summary(e), "email_state": states.get((e.grant_id or "", e.object_id or ""))} for e in found]
    next_before = items[-1]["id"] if len(items) == limit else None
    return JSONResponse({"items": items, "next_before": next_before})


@admin
async def event_detail(request: Request) -> Response:
    resources: Resources = request.state.resources
    only_known(request, "reveal")
    event_id = _event_id(request)
    reveal = flag(request.query_params.get("reveal"), "reveal")
    event, email = await event_and_email(resources, event_id)
    with database():
        async with read_session(resources.sessionmaker) as session:
            timeline = await stage_runs.timeline(session, email_id=email.id if email else None, event_id=event.id)
            done = await actions.for_email(session, email.id) if email else []
    body: dict[str, Any] = {
        **event_summary(event),
        "email": email_view(email, reveal=reveal) if email else None,
        "timeline": [run_view(run) for run in timeline],
        "actions": [
            {"kind": a.kind, "status": a.status, "error": a.error, "attempts": a.attempts, "done_at": str(a.done_at)}
            for a in done
        ],
    }
    if reveal:
        body["payload"] = event.payload
    return JSONResponse(body)


@admin
async def replay_event(request: Request) -> Response:
    """Replay one event: its dead process stage, or its email's dead stage; `force=true` re-runs done stages."""
    resources: Resources = request.state.resources
    only_known(request, "force")
    event_id = _event_id(request)
    force = flag(request.query_params.get("force"), "force")
    event, email = await event_and_email(resources, event_id)
    if event.status == "dead":
        chosen = ReplayFilter(event_ids=(event.id,))
    elif email is not None:
        chosen = ReplayFilter(email_ids=(email.id,), force=force)
    else:
        return JSONResponse({"error": "nothing_to_replay", "detail": "the event is not dead"}, status_code=409)
    with database():
        found = await replay(resources.sessionmaker, resources.queue, chosen, who=request.state.operator)
    replayed = {"events": len(found.event_ids), "email_stages": len(found.emails)}
    if not any(replayed.values()):
        return JSONResponse({"error": "nothing_to_replay", "detail": "nothing dead here (force=true re-runs)"}, 409)
    return JSONResponse({"replayed": replayed})


@admin
async def bulk_replay(request: Request) -> Response:
    """Body: {"stage", "grant", "since", "until", "error", "events": [ids], "emails": [ids], "force", "all",
    "dry_run" (default true: count first)}. Replaying with no filter at all needs `"all": true`."""
    resources: Resources = request.state.resources
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    stage = body.get("stage")
    if stage not in (None, "process", "classify", "act") or ("stage" in body and stage is None):
        raise BadRequest("stage must be process, classify or act")
    try:
        chosen = ReplayFilter(
            stage=stage,
            grant_id=body_str(body, "grant") or None,
            since=time_param(body_str(body, "since")),
            until=time_param(body_str(body, "until")),
            error_contains=body_str(body, "error") or None,
            event_ids=_body_ids(body, "events"),
            email_ids=_body_ids(body, "emails"),
            force=body_bool(body, "force", False),
        )
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    dry_run = body_bool(body, "dry_run", True)
    replay_all = body_bool(body, "all", False)  # checked whatever the other fields say: a malformed body is a 400
    if not dry_run and chosen == ReplayFilter(force=chosen.force) and not replay_all:
        # A click that meant one row must never replay every dead letter: everything has to be asked for by name.
        raise BadRequest('no filter: to replay every dead letter, send "all": true (count them first with dry_run)')
    with database():
        found = await replay(
            resources.sessionmaker, resources.queue, chosen, who=request.state.operator, dry_run=dry_run
        )
    return JSONResponse({"dry_run": dry_run, "events": len(found.event_ids), "email_stages": len(found.emails)})


def _body_ids(body: dict[str, Any], name: str) -> tuple[int, ...]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**63 for v in value
    ):
        raise BadRequest(f"{name} must be a list of ids")
    return tuple(value)


@admin
async def erase_grant(request: Request) -> Response:
    """Body: {"grant": G, "dry_run" (default true: count first)}. An erasure request: the grant's mail content goes
    from every table; ids, states and counts stay."""
    resources: Resources = request.state.resources
    body = await json_body(request)
    if not isinstance(body, dict) or set(body) - {"grant", "dry_run"}:
        raise BadRequest('the body must be {"grant": "...", "dry_run": true|false}')
    grant_id = body_str(body, "grant")
    if not grant_id:
        raise BadRequest("grant is required")
    dry_run = body_bool(body, "dry_run", True)
    with database():
        async with unit_of_work(resources.sessionmaker) as session:
            erased = await erasure.erase_grant(session, grant_id, dry_run=dry_run)
            if not dry_run:
                rows = erased.emails + erased.events + erased.actions
                await audit.record(
                    session, who=request.state.operator, action="erase", filter={"grant": grant_id}, rows=rows
                )
    return JSONResponse(
        {
            "dry_run": dry_run,
            "grant": grant_id,
            "emails": erased.emails,
            "events": erased.events,
            "actions": erased.actions,
        }
    )
