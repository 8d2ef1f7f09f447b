"""The fake Nylas's `/v3/webhooks`: the application's webhook destinations, kept as Nylas keeps them (the secret
only in the answers to create and rotate-secret). Answers are (HTTP status, body without its request id)."""

from __future__ import annotations

import secrets
import time
from typing import Any

Answer = tuple[int, dict[str, Any]]


def create(store: dict[str, dict[str, Any]], body: dict[str, Any], *, webhook_id: str, status: str) -> dict[str, Any]:
    now = int(time.time())
    webhook = {
        "id": webhook_id,
        "trigger_types": list(body.get("trigger_types") or []),
        "webhook_url": body["webhook_url"],
        "status": status,
        "notification_email_addresses": list(body.get("notification_email_addresses") or []),
        "status_updated_at": now,
        "created_at": now,
        "updated_at": now,
        "description": body.get("description"),
        "webhook_secret": secrets.token_hex(32),
    }
    store[webhook_id] = webhook
    return webhook


def _public(webhook: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in webhook.items() if k != "webhook_secret"}


def _error(status: int, kind: str, message: str) -> Answer:
    return status, {"error": {"type": kind, "message": message}}


def route(
    store: dict[str, dict[str, Any]], method: str, rest: list[str], body: dict[str, Any], *, new_id: str
) -> Answer:
    match rest:
        case [] if method == "GET":
            return 200, {"data": [_public(w) for w in store.values()], "next_cursor": None}
        case [] if method == "POST":
            url = str(body.get("webhook_url") or "")
            if not url.startswith("https://") or not body.get("trigger_types"):
                return _error(400, "api.invalid_request_error", "webhook_url must be https; trigger_types")
            return 200, {"data": create(store, body, webhook_id=new_id, status="active")}
        case [webhook_id, *_] if webhook_id not in store:
            return _error(404, "api.not_found_error", f"webhook {webhook_id} not found")
        case [webhook_id] if method == "GET":
            return 200, {"data": _public(store[webhook_id])}
        case [webhook_id] if method == "DELETE":
            del store[webhook_id]
            return 200, {"data": {"status": "success"}}
        case [webhook_id, "rotate-secret"] if method == "PUT":
            store[webhook_id].update(webhook_secret=secrets.token_hex(32), updated_at=int(time.time()))
            return 200, {"data": dict(store[webhook_id])}
    return _error(404, "api.not_found_error", f"no route for {method} /v3/webhooks/{'/'.join(rest)}")
