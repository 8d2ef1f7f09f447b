"""The admin surface's lock: a bearer token (MAILROOM_ADMIN_TOKEN), or a dashboard session.

Sessions live in Redis (shared by every API process) under a hash of a random id the cookie carries: they expire,
and logging out revokes them. Failed logins and bearer guesses are counted per client and slowed past a few a
minute (429), and each one is logged as `admin.auth_failed`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable

import structlog
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from db import audit
from db.errors import DatabaseError
from db.uow import unit_of_work
from service.errors import ServiceError
from service.state import Resources

log = structlog.get_logger(__name__)

SESSION_COOKIE = "mailroom_session"
CSRF_HEADER = "x-mailroom-csrf"
SESSION_SECONDS = 12 * 3600
# Failed attempts are counted per client over this window (MAILROOM_AUTH_FAILURES_PER_MINUTE of them are allowed).
FAILURE_WINDOW_SECONDS = 60

Handler = Callable[[Request], Awaitable[Response]]


class Unauthorized(ServiceError):
    """This endpoint needs `Authorization: Bearer <MAILROOM_ADMIN_TOKEN>` (or a dashboard login)."""

    status_code = 401
    code = "unauthorized"


class AdminDisabled(ServiceError):
    """The admin surface is off: set MAILROOM_ADMIN_TOKEN to turn it on."""

    status_code = 503
    code = "admin_disabled"


class TooManyFailures(ServiceError):
    """Too many failed logins or tokens from this client; wait a minute."""

    status_code = 429
    code = "too_many_failures"


def _session_key(resources: Resources, session_id: str) -> str:
    # Only a hash is stored: whoever reads Redis learns no cookie that would open the dashboard.
    return f"{resources.settings.queue_name}:session:{hashlib.sha256(session_id.encode()).hexdigest()}"


def _failures_key(resources: Resources, request: Request) -> str:
    client = request.client.host if request.client else "unknown"
    return f"{resources.settings.queue_name}:auth-failures:{client}"


async def open_session(resources: Resources) -> str:
    """A new dashboard session; the returned id goes in the cookie."""
    session_id = secrets.token_urlsafe(32)
    await resources.queue.set(_session_key(resources, session_id), b"1", ex=SESSION_SECONDS)
    return session_id


async def close_session(resources: Resources, session_id: str) -> None:
    await resources.queue.delete(_session_key(resources, session_id))


async def refuse_if_failing(resources: Resources, request: Request) -> None:
    """429 for a client past its failed attempts (fails open while Redis is away: the token still guards)."""
    try:
        failures = await resources.queue.get(_failures_key(resources, request))
    except RedisError:
        return
    if failures is not None and int(failures) >= resources.settings.auth_failures_per_minute:
        raise TooManyFailures()


async def failed(resources: Resources, request: Request, how: str) -> None:
    log.warning("admin.auth_failed", how=how, client=request.client.host if request.client else None)
    # In the audit trail too; the limit below (429 past a few a minute) bounds how many rows a guesser writes.
    with contextlib.suppress(DatabaseError):
        async with unit_of_work(resources.sessionmaker) as session:
            await audit.record(session, who=f"{how}@{client_address(request)}", action="sign_in_refused")
    try:
        key = _failures_key(resources, request)
        async with resources.queue.pipeline(transaction=True) as pipe:
            # The window starts at the first failure (SET NX EX: EXPIRE NX needs Redis 7).
            pipe.set(key, 0, ex=FAILURE_WINDOW_SECONDS, nx=True)
            pipe.incr(key)
            await pipe.execute()
    except RedisError:
        pass


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def check(request: Request) -> str:
    """Who is asking (`token@address` or `dashboard@address`, for the audit trail), or raise."""
    resources: Resources = request.state.resources
    token = resources.settings.admin_token.get_secret_value()
    if not token:
        raise AdminDisabled()
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return f"token@{client_address(request)}"
    session_id = request.cookies.get(SESSION_COOKIE, "")
    if not header and not session_id:
        raise Unauthorized()  # no credentials at all: nothing was guessed
    await refuse_if_failing(resources, request)
    if session_id and await resources.queue.exists(_session_key(resources, session_id)):
        # A cookie rides along on cross-site requests; a custom header cannot be added by another site's form.
        if request.method not in ("GET", "HEAD") and request.headers.get(CSRF_HEADER) != "1":
            raise Unauthorized("a dashboard request that changes something must carry X-Mailroom-CSRF: 1")
        return f"dashboard@{client_address(request)}"
    if header:
        await failed(resources, request, "bearer")
    raise Unauthorized()


def admin(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        request.state.operator = await check(request)
        return await handler(request)

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded
