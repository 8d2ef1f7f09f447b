"""Parsing the v3 envelope: what is required, what is tolerated, and what each type carries."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jobs.triggers import Kind, parse_trigger
from service.errors import InvalidNotification
from service.notifications import MAX_KEY_BYTES, parse_notification, parse_time
from tests.notifications import envelope, message

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("type_", "kind", "truncated"),
    [
        ("message.created", Kind.MESSAGE, False),
        ("message.updated", Kind.MESSAGE, False),
        ("message.created.truncated", Kind.MESSAGE, True),
        ("message.updated.transformed", Kind.MESSAGE, False),
        ("message.created.cleaned.truncated", Kind.MESSAGE, True),
        ("message.deleted", Kind.MESSAGE_DELETED, False),
        ("grant.expired", Kind.GRANT, False),
        ("grant.updated", Kind.GRANT, False),
        ("grant.deleted", Kind.GRANT, False),
    ],
)
def test_processed_triggers(type_: str, kind: Kind, truncated: bool) -> None:
    trigger = parse_trigger(type_)
    assert trigger is not None
    assert (trigger.kind, trigger.truncated) == (kind, truncated)


@pytest.mark.parametrize(
    "type_",
    [
        "message.opened",
        "message.created.metadata",
        "message.send_success",
        "grant.created",
        "grant.deleted.truncated",
        "thread.replied",
        "event.created",
        "message",
        "",
    ],
)
def test_other_types_are_not_processed(type_: str) -> None:
    assert parse_trigger(type_) is None


def test_message_notification_fields() -> None:
    parsed = parse_notification(envelope(message(), notification_id="evt_9"), received_at=NOW).event
    assert (parsed.notification_id, parsed.type, parsed.grant_id, parsed.object_id) == (
        "evt_9",
        "message.created",
        "grant_1",
        "msg_1",
    )
    assert parsed.source == "/google/emails/realtime"
    assert parsed.delivery_attempt == 1
    assert parsed.notified_at == datetime.fromtimestamp(1723821985, tz=UTC)


def test_tracking_notification_takes_grant_from_data_and_message_id() -> None:
    payload = envelope({"object": "thread", "message_id": "m_7"}, type="thread.replied")
    payload["data"]["grant_id"] = "grant_9"
    parsed = parse_notification(payload, received_at=NOW)
    assert (parsed.event.grant_id, parsed.event.object_id, parsed.trigger) == ("grant_9", "m_7", None)
    assert parsed.event.status == "ignored"


@pytest.mark.parametrize("value", [None, "yesterday", True, [], 10**20])
def test_unreadable_time_falls_back_to_receipt(value: object) -> None:
    payload = envelope(message())
    payload["time"] = value
    assert parse_notification(payload, received_at=NOW).event.notified_at == NOW


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1723821985, 1723821985.0),
        ("1723821985", 1723821985.0),
        ("2024-08-16T15:26:25Z", 1723821985.0),
        ("2024-08-16T17:26:25+02:00", 1723821985.0),
    ],
)
def test_time_spellings(value: object, expected: float) -> None:
    parsed = parse_time(value)
    assert parsed is not None and parsed.timestamp() == expected


def test_empty_id_is_refused() -> None:
    payload = envelope(message())
    payload["id"] = ""
    with pytest.raises(InvalidNotification, match="field id must be a non-empty string"):
        parse_notification(payload, received_at=NOW)


def test_overlong_keys_are_refused() -> None:
    """PostgreSQL cannot index them; storing would fail forever and Nylas would retry forever."""
    with pytest.raises(InvalidNotification, match=r"data\.object\.id is longer"):
        parse_notification(envelope(message(message_id="x" * (MAX_KEY_BYTES + 1))), received_at=NOW)


def test_v2_deltas_are_refused_with_an_explanation() -> None:
    with pytest.raises(InvalidNotification, match="v2"):
        parse_notification({"deltas": [{"type": "message.created"}]}, received_at=NOW)


def test_data_object_of_the_wrong_type_is_refused() -> None:
    payload = envelope(message())
    payload["data"]["object"] = "msg_1"
    with pytest.raises(InvalidNotification, match=r"data\.object must be an object"):
        parse_notification(payload, received_at=NOW)
