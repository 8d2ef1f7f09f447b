"""Errors the HTTP edge answers with, and the handler that turns them into JSON responses."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class ServiceError(Exception):
    """The request could not be handled."""

    status_code = 500
    code = "internal_error"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or (self.__doc__ or "").strip()
        super().__init__(self.detail)


class BodyTooLarge(ServiceError):
    """The request body is larger than this endpoint accepts."""

    status_code = 413
    code = "body_too_large"


class SignatureMismatch(ServiceError):
    """The x-nylas-signature header is missing or does not match the body under any configured secret."""

    status_code = 401
    code = "invalid_signature"


class UnsupportedEncoding(ServiceError):
    """The body's Content-Encoding is not one this endpoint reads (identity or gzip)."""

    status_code = 415
    code = "unsupported_encoding"


class MalformedBody(ServiceError):
    """The body is not valid JSON."""

    status_code = 400
    code = "malformed_body"


class MissingChallenge(ServiceError):
    """The query parameter `challenge` is missing."""

    status_code = 400
    code = "missing_challenge"


class InvalidNotification(ServiceError):
    """The body is JSON but not a Nylas v3 notification."""

    status_code = 422
    code = "invalid_notification"


class DatabaseUnavailable(ServiceError):
    """The notification could not be stored; nothing was acknowledged, so Nylas will retry it."""

    status_code = 503
    code = "database_unavailable"


class NotConfigured(ServiceError):
    """No webhook secret is configured (MAILROOM_WEBHOOK_SECRETS), so no notification can be verified."""

    status_code = 503
    code = "not_configured"


class RedisUnavailable(ServiceError):
    """Redis (the queue and the metrics totals) could not be reached; try again shortly."""

    status_code = 503
    code = "redis_unavailable"


async def handle_redis_error(request: Request, exc: Exception) -> Response:
    """Redis down is an outage to report (KEDA and Prometheus read these endpoints), not a bug: 503, never 500."""
    return await handle_service_error(request, RedisUnavailable())


async def handle_service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    headers = {"Retry-After": "5"} if exc.status_code == 503 else None
    return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status_code, headers=headers)
