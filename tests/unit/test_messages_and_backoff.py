"""Pure pieces of the worker: message → columns, and retry delays."""

from __future__ import annotations

import random

import pytest

from jobs.backoff import retry_delay
from jobs.message_columns import email_columns, is_complete
from tests.notifications import message, truncated


def test_columns_from_a_complete_message() -> None:
    columns = email_columns(message(cc=[{"email": "c@example.com"}], starred=True))
    assert columns["from_email"] == "ana@example.com"
    assert columns["cc"] == [{"email": "c@example.com"}]
    assert columns["starred"] is True
    assert columns["date"] is not None and columns["date"].timestamp() == 1723821981
    assert columns["raw"]["id"] == "msg_1"


def test_nul_characters_are_dropped_everywhere() -> None:
    """PostgreSQL text and JSONB refuse U+0000."""
    columns = email_columns(message(subject="a\x00b", body="x\x00", headers=[{"name": "X\x00", "value": "v"}]))
    assert columns["subject"] == "ab"
    assert columns["body"] == "x"
    assert columns["raw"]["headers"] == [{"name": "X", "value": "v"}]


def test_wrong_types_become_nulls_not_errors() -> None:
    columns = email_columns({"id": "m", "grant_id": "g", "subject": 7, "date": "soon", "folders": "INBOX", "from": "x"})
    assert (columns["subject"], columns["date"], columns["folders"], columns["from_email"]) == (None, None, None, None)


def test_truncated_or_id_only_objects_are_incomplete() -> None:
    assert is_complete(message())
    assert not is_complete(truncated(message()))
    assert not is_complete({"object": "message", "id": "m", "grant_id": "g"})


@pytest.mark.parametrize("attempt", [1, 2, 3, 8, 30])
def test_delay_is_within_the_full_jitter_window(attempt: int) -> None:
    rng = random.Random(attempt)
    for _ in range(200):
        delay = retry_delay(attempt, base=1.0, cap=60.0, rng=rng)
        assert 0 <= delay <= min(60.0, 2 ** (attempt - 1))


def test_window_grows_with_attempts() -> None:
    rng = random.Random(0)
    means = [sum(retry_delay(n, base=1.0, cap=1000.0, rng=rng) for _ in range(500)) / 500 for n in (1, 3, 5)]
    assert means[0] < means[1] < means[2]


def test_retry_after_is_a_floor_even_above_our_cap_up_to_an_hour() -> None:
    rng = random.Random(1)
    assert retry_delay(1, base=0.1, cap=60.0, retry_after=30, rng=rng) >= 30
    assert retry_delay(1, base=0.1, cap=60.0, retry_after=600, rng=rng) == 600
    assert retry_delay(1, base=0.1, cap=60.0, retry_after=86400, rng=rng) == 3600
