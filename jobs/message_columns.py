"""Pure mapping from a Nylas message object (webhook payload or SDK answer) to `emails` columns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from db.storable import strip_nul


def is_complete(message: dict[str, Any]) -> bool:
    """A webhook's object can stand in for a fetch when it carries the body; truncated or id-only ones do not."""
    return "body" in message and "date" in message


def view_source(raw: dict[str, Any] | None, body: str | None) -> dict[str, Any]:
    """The Nylas object as classify and act read it: the stored raw object with its body put back."""
    return {**(raw or {}), "body": body}


def email_columns(message: dict[str, Any]) -> dict[str, Any]:
    message = strip_nul(message)
    senders = _addresses(message.get("from"))
    first_email = senders[0].get("email") if senders else None
    folders = message.get("folders")
    return {
        "thread_id": _str(message.get("thread_id")),
        "subject": _str(message.get("subject")),
        "from_": senders,
        "from_email": first_email.lower() if isinstance(first_email, str) else None,
        "to": _addresses(message.get("to")),
        "cc": _addresses(message.get("cc")),
        "bcc": _addresses(message.get("bcc")),
        "reply_to": _addresses(message.get("reply_to")),
        "date": _timestamp(message.get("date")),
        "snippet": _str(message.get("snippet")),
        "body": _str(message.get("body")),
        "folders": [f for f in folders if isinstance(f, str)] if isinstance(folders, list) else None,
        "unread": _bool(message.get("unread")),
        "starred": _bool(message.get("starred")),
        # Everything Nylas sent but the body, which is stored once, in `body`.
        "raw": {key: value for key, value in message.items() if key != "body"},
    }


def _addresses(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _timestamp(value: object) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None
