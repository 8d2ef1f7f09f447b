"""/dashboard: the operator's page (our Flower). One HTML file with plain JavaScript: no build step, no Node.

The page itself holds no data; everything it shows comes from admin endpoints, which need the token (or the
session cookie that logging in on the page sets).
"""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from db import audit, cron_runs, emails, pauses, webhook_destinations, webhook_events
from db.models import AuditEntry
from db.uow import read_session
from jobs.heartbeat import live_workers
from service import auth, health
from service.admin import database, email_view, event_summary, flag, int_param, only_known
from service.auth import CSRF_HEADER, SESSION_COOKIE, Unauthorized, admin
from service.body_limits import ADMIN_BODY_LIMIT, read_limited
from service.state import Resources

PAGE = Path(__file__).with_name("static") / "dashboard.html"
# uPlot, served beside the page (no CDN: the dashboard works offline and the CSP allows only this origin).
UPLOT = Path(__file__).with_name("static") / "uplot"


async def page(request: Request) -> Response:
    # The page's one inline script runs by its nonce; nothing else may (a stored string that slipped past escaping
    # still could not run), and the page may not be framed.
    nonce = secrets.token_urlsafe(16)
    html = PAGE.read_text().replace("<script>", f'<script nonce="{nonce}">', 1)
    policy = (
        f"default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store", "Content-Security-Policy": policy})


async def login(request: Request) -> Response:
    resources: Resources = request.state.resources
    token = resources.settings.admin_token.get_secret_value()
    await auth.refuse_if_failing(resources, request)
    form = parse_qs((await read_limited(request, ADMIN_BODY_LIMIT)).decode("utf-8", "replace"))
    given = (form.get("token") or [""])[0]
    if not token or not hmac.compare_digest(given.encode(), token.encode()):
        await auth.failed(resources, request, "login")
        return JSONResponse({"error": "unauthorized", "detail": "wrong token"}, status_code=401)
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        await auth.open_session(resources),
        httponly=True,
        samesite="strict",
        # Behind a TLS proxy, the scheme comes from X-Forwarded-Proto of MAILROOM_TRUSTED_PROXIES only.
        secure=request.url.scheme == "https",
        max_age=auth.SESSION_SECONDS,
    )
    return response


async def logout(request: Request) -> Response:
    """Revokes the session on the server; a cross-site form cannot log anyone out (it cannot send the header)."""
    resources: Resources = request.state.resources
    if request.headers.get(CSRF_HEADER) != "1":
        raise Unauthorized("logging out must carry X-Mailroom-CSRF: 1")
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        await auth.close_session(resources, session_id)
    response = JSONResponse({"logged_out": True})
    response.delete_cookie(SESSION_COOKIE)
    return response


def next_run(minutes: set[int], now: datetime) -> datetime:
    candidate = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while candidate.minute not in minutes:
        candidate += timedelta(minutes=1)
    return candidate


@admin
async def overview(request: Request) -> Response:
    """Everything the page polls, in one answer."""
    resources: Resources = request.state.resources
    settings = resources.settings
    only_known(request, "reveal")
    reveal = flag(request.query_params.get("reveal"), "reveal")
    depth = await health.depth(resources)
    workers = await live_workers(resources.queue, settings.queue_name)
    now = datetime.now(UTC)
    schedule = {
        "sweep": set(range(60)),
        "sync_recent_emails": set(range(0, 60, settings.sync_interval_minutes)),
        **({"retention": {23}} if settings.retention_days else {}),
        **(
            {"nylas_webhooks": set(range(0, 60, max(1, settings.nylas_webhook_check_seconds // 60)))}
            if settings.nylas_webhook_check_seconds
            else {}
        ),
    }
    with database():
        async with read_session(resources.sessionmaker) as session:
            last_runs = {run["name"]: run for run in await cron_runs.latest(session)}
            dead_events = await webhook_events.dead(session, limit=50)
            dead_emails = await emails.dead(session, limit=50)
            destinations = await webhook_destinations.all_destinations(session)
            trail = await audit.latest(session, limit=20)
            paused = await pauses.all_pauses(session)
            grant_rates = await pauses.rates(session)
    dead: list[dict[str, Any]] = [{"kind": "event", **event_summary(e)} for e in dead_events]
    dead += [{"kind": "email", **email_view(e, reveal=reveal)} for e in dead_emails]
    cron = [
        {
            "name": name,
            "last": last_runs.get(name),
            "next_run": next_run(minutes, now).isoformat(),
        }
        for name, minutes in schedule.items()
    ]
    nylas_webhooks = [
        {
            "id": d.id,
            "url": d.url,
            "status": d.status,
            "unhealthy_since": d.unhealthy_since.isoformat() if d.unhealthy_since else None,
            "checked_at": d.checked_at.isoformat(),
        }
        for d in destinations
    ]
    return JSONResponse(
        {
            "depth": depth,
            "workers": workers,
            "cron": cron,
            "dead_letters": dead,
            "nylas_webhooks": nylas_webhooks,
            "audit": [audit_view(entry) for entry in trail],
            "rates": {"default": settings.nylas_rate_per_grant, "grants": grant_rates},
            "pauses": [
                {"scope": p.scope, "target": p.target, "since": p.paused_at.isoformat(), "by": p.paused_by}
                for p in paused
            ],
        }
    )


def audit_view(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": entry.at.isoformat(),
        "who": entry.who,
        "action": entry.action,
        "filter": entry.filter,
        "rows": entry.rows,
    }


@admin
async def audit_trail(request: Request) -> Response:
    """The audit trail, newest first: `?limit=` (at most 500), `?action=` (replay, purge, erase, sign_in_refused)."""
    resources: Resources = request.state.resources
    only_known(request, "limit", "action")
    limit = int_param(request.query_params.get("limit"), "limit", 50, high=500) or 50
    with database():
        async with read_session(resources.sessionmaker) as session:
            entries = await audit.latest(session, limit=limit, action=request.query_params.get("action"))
    return JSONResponse({"entries": [audit_view(entry) for entry in entries]})


def routes() -> list[BaseRoute]:
    return [
        Route("/dashboard", page, methods=["GET"]),
        Route("/dashboard/login", login, methods=["POST"]),
        Route("/dashboard/logout", logout, methods=["POST"]),
        Route("/api/overview", overview, methods=["GET"]),
        Route("/audit", audit_trail, methods=["GET"]),
        Mount("/dashboard/static/uplot", StaticFiles(directory=UPLOT)),
    ]
