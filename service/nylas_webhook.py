"""POST /webhooks/nylas: verify, record, commit, enqueue, answer. GET answers Nylas's challenge."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import structlog
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from db import webhook_events
from db.errors import DatabaseError, translate_errors
from db.uow import unit_of_work
from db.values import strip_nul
from jobs.enqueue import enqueue_process_event
from service import signatures
from service.bodies import decode_content, read_limited
from service.errors import DatabaseUnavailable, MalformedBody, MissingChallenge, NotConfigured, SignatureMismatch
from service.notifications import Notification, parse_notification
from service.state import Resources

log = structlog.get_logger(__name__)


async def challenge(request: Request) -> Response:
    """Nylas checks a new destination by asking us to echo `challenge`, bare, as text."""
    value = request.query_params.get("challenge")
    if value is None:
        raise MissingChallenge()
    return PlainTextResponse(value)


async def receive(request: Request) -> Response:
    resources: Resources = request.state.resources
    settings = resources.settings
    if not resources.webhook_secrets:
        raise NotConfigured()
    raw = await read_limited(request, settings.max_body_bytes)
    # The signature covers the bytes as sent, so it is checked before anything is decoded.
    if not signatures.is_valid(raw, request.headers.get("x-nylas-signature"), resources.webhook_secrets):
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
    notification = parse_notification(payload, received_at=datetime.now(UTC))
    outcome, event_id = await _record_and_enqueue(resources, notification)
    # Known types by name; any other as "other", so a stream of odd types cannot grow the label set.
    type_label = notification.trigger.base if notification.trigger else "other"
    resources.metrics.inc("mailroom_webhooks", type=type_label, outcome=outcome)
    if outcome == "duplicate":
        resources.metrics.inc("mailroom_webhook_duplicates")
    return JSONResponse({"status": outcome, "event_id": event_id})


async def _record_and_enqueue(resources: Resources, notification: Notification) -> tuple[str, int]:
    """Store, then queue; returns the outcome (queued, received, duplicate, ignored) and the event id."""
    status = "received" if notification.trigger is not None else "ignored"
    bound = log.bind(notification_id=notification.id, type=notification.type, grant_id=notification.grant_id)
    try:
        with translate_errors():
            async with unit_of_work(resources.sessionmaker) as session:
                event_id = await webhook_events.record_if_new(
                    session,
                    notification_id=notification.id,
                    type=notification.type,
                    source=notification.source,
                    grant_id=notification.grant_id,
                    object_id=notification.object_id,
                    notified_at=notification.notified_at,
                    delivery_attempt=notification.delivery_attempt,
                    payload=notification.payload,
                    status=status,
                )
                duplicate_of = None
                if event_id is None:
                    duplicate_of = await webhook_events.get_by_notification(session, notification.id)
    except DatabaseError as exc:
        bound.error("webhook.store_failed", error=str(exc))
        raise DatabaseUnavailable() from exc

    if duplicate_of is not None:
        bound.info("webhook.duplicate", event_id=duplicate_of.id, status=duplicate_of.status)
        if duplicate_of.status == "received":
            # The first delivery was stored but its enqueue failed; this retry from Nylas is a chance to heal.
            await _enqueue(resources, duplicate_of.id, bound)
        return "duplicate", duplicate_of.id
    assert event_id is not None
    bound = bound.bind(event_id=event_id)
    if status == "ignored":
        bound.info("webhook.ignored")
        return "ignored", event_id
    queued = await _enqueue(resources, event_id, bound)
    return ("queued" if queued else "received"), event_id


async def _enqueue(resources: Resources, event_id: int, bound: structlog.typing.FilteringBoundLogger) -> bool:
    """Put the job in Redis and note it; on failure the event stays `received` for the sweeper. Never raises."""
    try:
        await enqueue_process_event(resources.queue, event_id)
    except (RedisError, OSError) as exc:
        bound.warning("webhook.enqueue_failed", error=str(exc))
        return False
    try:
        with translate_errors():
            async with unit_of_work(resources.sessionmaker) as session:
                await webhook_events.mark_queued(session, event_id)
    except DatabaseError as exc:
        # The job is in Redis and will run; only the `queued` bookkeeping is missing.
        bound.warning("webhook.mark_queued_failed", error=str(exc))
    bound.info("webhook.queued")
    return True
