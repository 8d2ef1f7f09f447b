"""POST /webhooks/nylas: verify, record, commit, enqueue, answer. GET answers Nylas's challenge."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace
from datetime import UTC, datetime

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from core import tracing
from db.errors import DatabaseError
from db.storable import strip_nul
from service import signatures
from service.body_limits import decode_content, read_limited
from service.errors import (
    DatabaseUnavailable,
    InvalidNotification,
    MalformedBody,
    MissingChallenge,
    NotConfigured,
    ServiceError,
    SignatureMismatch,
)
from service.notifications import parse_notification
from service.state import Resources

log = structlog.get_logger(__name__)
JSON = "application/json"
HASH_OFF_LOOP_BYTES = 256 * 1024
# Tokens, UUIDs and (URL-safe) base64: what a random challenge is made of; never markup or whitespace.
CHALLENGE = re.compile(r"[A-Za-z0-9._~+/=:-]{1,512}")


async def endpoint(request: Request) -> Response:
    """One route for both methods, so a 405 names them both in its Allow header."""
    if request.method != "POST":
        return await challenge(request)
    # Every answer to a delivery is counted by status and by whether it was signed: a 4xx to a signed delivery is
    # a notification Nylas will never send again (MailroomWebhookRejections), a 5xx one it will retry.
    signed = "true" if "x-nylas-signature" in request.headers else "false"
    metrics = request.state.resources.metrics
    started = time.perf_counter()
    code = "500"
    try:
        response = await receive(request)
        code = str(response.status_code)
        return response
    except ServiceError as exc:
        code = str(exc.status_code)
        raise
    finally:
        metrics.inc("mailroom_webhook_responses", code=code, signed=signed)
        metrics.observe("mailroom_webhook_duration_seconds", time.perf_counter() - started, code=code)


async def challenge(request: Request) -> Response:
    """Nylas checks a new destination by asking us to echo `challenge`, bare, as text."""
    value = request.query_params.get("challenge")
    if value is None:
        raise MissingChallenge()
    # Nylas sends a random token; echoing anything else verbatim would make this URL a reflector for any text.
    if not CHALLENGE.fullmatch(value):
        raise MissingChallenge("the challenge must be 1 to 512 letters, digits or any of . _ ~ + / = : -")
    return PlainTextResponse(value)


async def receive(request: Request) -> Response:
    resources: Resources = request.state.resources
    settings = resources.settings
    if not resources.webhook_secrets:
        raise NotConfigured()
    raw = await read_limited(request, settings.max_body_bytes)
    # The signature covers the bytes as sent, so it is checked before anything is decoded.
    header = request.headers.get("x-nylas-signature")
    if len(raw) > HASH_OFF_LOOP_BYTES:
        # Hashing a large body takes milliseconds: on a thread, so other requests are not held up meanwhile.
        valid = await asyncio.to_thread(signatures.is_valid, raw, header, resources.webhook_secrets)
    else:
        valid = signatures.is_valid(raw, header, resources.webhook_secrets)
    if not valid:
        log.warning("webhook.signature_mismatch")
        resources.metrics.inc("mailroom_signature_failures")
        raise SignatureMismatch()
    body = decode_content(raw, request.headers.get("content-encoding"), settings.max_decompressed_bytes)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from exc
    if b"\\u0000" in body:
        # JSON can only carry U+0000 escaped; PostgreSQL's JSONB refuses it, which would be a 503 on every retry.
        payload = strip_nul(payload)
    try:
        payload_json = orjson.dumps(payload).decode()
    except orjson.JSONEncodeError as exc:
        # orjson writes at most 254 levels of nesting (it reads more): no notification Nylas sends comes near.
        raise InvalidNotification(f"the notification cannot be stored: {exc}") from exc
    notification = parse_notification(payload, received_at=datetime.now(UTC), payload_json=payload_json)
    event = notification.event
    try:
        # The enqueue: stored (the batch workers' queue is this table), committed, NOTIFY sent.
        with tracing.span("mailroom.enqueue", attributes={"mailroom.notification_type": event.type}):
            if (traceparent := tracing.current_context()) is not None:
                event = replace(event, trace_context=traceparent)
            recorded = await resources.writer.record(event)
    except DatabaseError as exc:
        log.error("webhook.store_failed", notification_id=event.notification_id, error=str(exc))
        raise DatabaseUnavailable() from exc
    log.info(
        f"webhook.{recorded.outcome}",
        notification_id=event.notification_id,
        type=event.type,
        grant_id=event.grant_id,
        event_id=recorded.event_id,
    )
    # Known types by name; any other as "other", so a stream of odd types cannot grow the label set.
    type_label = notification.trigger.base if notification.trigger else "other"
    resources.metrics.inc("mailroom_webhooks", type=type_label, outcome=recorded.outcome)
    if recorded.outcome == "duplicate":
        resources.metrics.inc("mailroom_webhook_duplicates")
    else:
        attempt = event.delivery_attempt or 1
        resources.metrics.inc("mailroom_webhook_delivery_attempts", attempt=str(attempt) if attempt < 4 else "4+")
    return Response(orjson.dumps({"status": recorded.outcome, "event_id": recorded.event_id}), media_type=JSON)
