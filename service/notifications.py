"""Pure parsing of a Nylas v3 notification envelope into the row we store (parsed once, here); raises
InvalidNotification naming the field."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from db.states import EventStatus
from db.webhook_events import NewEvent
from jobs.triggers import Kind, Trigger, parse_trigger
from service.errors import InvalidNotification

# Keys are indexed; a b-tree entry over ~2.7 kB is refused by PostgreSQL, which would turn into endless 503s.
# Counted in UTF-8 bytes, as PostgreSQL counts them: 512 characters of 4 bytes each would be 2 kB.
MAX_KEY_BYTES = 512
# webhook_delivery_attempt is stored as a PostgreSQL integer.
MAX_INT32 = 2**31 - 1
# A notification's time orders the states of a message; one dated ahead of now would freeze the message (every real
# later change would look older), so times ahead of the receive time by more than this are taken as the receive time.
MAX_CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Notification:
    event: NewEvent  # the row, as the writer stores it
    trigger: Trigger | None  # None: a type mailroom does not process (stored as `ignored`)


def parse_notification(payload: object, *, received_at: datetime, payload_json: str = "") -> Notification:
    """`payload_json`: the payload as it will be stored (the caller serializes it, after making it storable)."""
    if not isinstance(payload, dict):
        raise InvalidNotification("the body must be a JSON object (a Nylas v3 notification)")
    _refuse_older_shapes(payload)
    notification_id = _required_str(payload, "id", "id")
    type_ = _required_str(payload, "type", "type")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise InvalidNotification("missing field: data (an object)" if data is None else "field data must be an object")
    obj = data.get("object")
    if not isinstance(obj, dict):
        raise InvalidNotification(
            "missing field: data.object (an object)" if obj is None else "field data.object must be an object"
        )

    trigger = parse_trigger(type_)
    if trigger is not None and trigger.kind in (Kind.MESSAGE, Kind.MESSAGE_DELETED):
        object_id: str | None = _required_str(obj, "id", "data.object.id")
        grant_id: str | None = _required_str(obj, "grant_id", "data.object.grant_id")
    elif trigger is not None and trigger.kind is Kind.GRANT:
        grant_id = _required_str(obj, "grant_id", "data.object.grant_id")
        object_id = grant_id
    else:
        grant_id = _optional_str(obj.get("grant_id")) or _optional_str(data.get("grant_id"))
        object_id = _optional_str(obj.get("id")) or _optional_str(obj.get("message_id"))

    source = payload.get("source")
    attempt = payload.get("webhook_delivery_attempt")
    event = NewEvent(
        notification_id=notification_id,
        type=type_,
        source=source if isinstance(source, str) else None,
        grant_id=grant_id,
        object_id=object_id,
        notified_at=_believable(parse_time(payload.get("time")), received_at),
        delivery_attempt=attempt
        if isinstance(attempt, int) and not isinstance(attempt, bool) and 0 <= attempt <= MAX_INT32
        else None,
        payload_json=payload_json,
        status=EventStatus.RECEIVED if trigger is not None else EventStatus.IGNORED,
    )
    return Notification(event=event, trigger=trigger)


def _believable(when: datetime | None, received_at: datetime) -> datetime:
    """The notification's time, unless it is missing or further ahead of our clock than skew explains."""
    if when is None or when > received_at + MAX_CLOCK_SKEW:
        return received_at
    return when


def parse_time(value: object) -> datetime | None:
    """Nylas documents Unix seconds; some tools send RFC 3339. Anything else is not a reason to refuse."""
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, tz=UTC)
        if isinstance(value, str):
            if value.strip().lstrip("-").replace(".", "", 1).isdigit():
                return datetime.fromtimestamp(float(value), tz=UTC)
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _refuse_older_shapes(payload: dict[str, Any]) -> None:
    if "type" in payload:
        return
    if "trigger" in payload or "object_data" in payload:
        raise InvalidNotification(
            "missing field: type. This is the {trigger, grant_id, object_data} shape from older guides, which is "
            "not a Nylas v3 notification; mailroom accepts v3 envelopes (type, id, data.object)"
        )
    if "deltas" in payload:
        raise InvalidNotification(
            "missing field: type. This is a Nylas v2 webhook (deltas); mailroom accepts v3 notifications only"
        )


def _required_str(container: dict[str, Any], key: str, path: str) -> str:
    value = container.get(key)
    if value is None:
        raise InvalidNotification(f"missing field: {path}")
    if not isinstance(value, str) or not value:
        raise InvalidNotification(f"field {path} must be a non-empty string")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidNotification(f"field {path} is longer than {MAX_KEY_BYTES} bytes (UTF-8)")
    return value


def _optional_str(value: object) -> str | None:
    if isinstance(value, str) and value and len(value.encode("utf-8", "surrogatepass")) <= MAX_KEY_BYTES:
        return value
    return None
