"""Builders for signed Nylas v3 notifications, as Nylas would POST them."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import orjson

from service.signatures import sign

SECRET = "test_webhook_secret"
_ids = itertools.count(1)


def message(grant_id: str = "grant_1", message_id: str = "msg_1", **fields: Any) -> dict[str, Any]:
    """A complete Nylas message object (the shape `messages.find` returns and `message.created` carries)."""
    base: dict[str, Any] = {
        "object": "message",
        "id": message_id,
        "grant_id": grant_id,
        "thread_id": "thr_1",
        "subject": "Invoice",
        "from": [{"name": "Ana", "email": "Ana@Example.com"}],
        "to": [{"email": "me@example.org"}],
        "cc": [],
        "bcc": [],
        "reply_to": [],
        "date": 1723821981,
        "unread": True,
        "starred": False,
        "snippet": "Please find...",
        "body": "<div>Please find...</div>",
        "folders": ["INBOX"],
        "attachments": [],
    }
    base.update(fields)
    return base


def envelope(
    obj: dict[str, Any],
    *,
    type: str = "message.created",
    notification_id: str | None = None,
    time: int = 1723821985,
    attempt: int = 1,
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "type": type,
        "source": "/google/emails/realtime",
        "id": notification_id or f"evt_{next(_ids)}",
        "time": time,
        "webhook_delivery_attempt": attempt,
        "data": {"application_id": "app_1", "object": obj},
    }


def truncated(obj: dict[str, Any]) -> dict[str, Any]:
    """What Nylas keeps of a message in a `.truncated` notification: no body."""
    return {k: v for k, v in obj.items() if k != "body"}


def grant_object(grant_id: str = "grant_1", **fields: Any) -> dict[str, Any]:
    return {"code": 25009, "grant_id": grant_id, "integration_id": "int_1", "provider": "google", **fields}


def encode(payload: Any) -> bytes:
    return orjson.dumps(payload)


async def post(
    client: httpx.AsyncClient,
    payload: Any = None,
    *,
    body: bytes | None = None,
    secret: str | None = SECRET,
    headers: dict[str, str] | None = None,
    signed_body: bytes | None = None,
) -> httpx.Response:
    """POST a notification signed the way Nylas signs it (over the exact bytes sent, unless told otherwise)."""
    raw = body if body is not None else encode(payload)
    all_headers = {"content-type": "application/json"}
    if secret is not None:
        all_headers["x-nylas-signature"] = sign(secret, signed_body if signed_body is not None else raw)
    all_headers.update(headers or {})
    return await client.post("/webhooks/nylas", content=raw, headers=all_headers)
