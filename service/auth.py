"""The admin surface's lock: a bearer token (MAILROOM_ADMIN_TOKEN), or the dashboard's session cookie."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from service.errors import ServiceError
from service.state import Resources

SESSION_COOKIE = "mailroom_session"
CSRF_HEADER = "x-mailroom-csrf"

Handler = Callable[[Request], Awaitable[Response]]


class Unauthorized(ServiceError):
    """This endpoint needs `Authorization: Bearer <MAILROOM_ADMIN_TOKEN>` (or a dashboard login)."""

    status_code = 401
    code = "unauthorized"


class AdminDisabled(ServiceError):
    """The admin surface is off: set MAILROOM_ADMIN_TOKEN to turn it on."""

    status_code = 503
    code = "admin_disabled"


def session_value(token: str) -> str:
    """What the cookie holds: derived from the token, so the token itself never sits in a browser."""
    return hmac.new(token.encode(), b"mailroom dashboard session", hashlib.sha256).hexdigest()


def check(request: Request) -> None:
    resources: Resources = request.state.resources
    token = resources.settings.admin_token.get_secret_value()
    if not token:
        raise AdminDisabled()
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if cookie and hmac.compare_digest(cookie.encode(), session_value(token).encode()):
        # A cookie rides along on cross-site requests; a custom header cannot be added by another site's form.
        if request.method not in ("GET", "HEAD") and request.headers.get(CSRF_HEADER) != "1":
            raise Unauthorized("a dashboard request that changes something must carry X-Mailroom-CSRF: 1")
        return
    raise Unauthorized()


def admin(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        check(request)
        return await handler(request)

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded
