"""How the history's samples become chart columns: rates from counter differences, a break where nobody sampled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from db.models import HistorySample
from service.history import COUNTED, DEPTH, columns

START = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


def sample(second: int, *, ready: int = 0, processed: float = 0) -> HistorySample:
    figures = dict.fromkeys((*DEPTH, *COUNTED), 0) | {"ready": ready, "processed": processed}
    return HistorySample(at=START + timedelta(seconds=second), **figures)


def test_rates_are_differences_over_the_interval() -> None:
    chart = columns([sample(0, processed=100), sample(10, processed=150), sample(20, processed=150)], period=10)
    assert chart["processed"] == [None, 5.0, 0.0]
    assert chart["t"] == [START.timestamp() + s for s in (0, 10, 20)]


def test_a_missing_interval_breaks_the_lines() -> None:
    chart = columns([sample(0, ready=3), sample(10, ready=4), sample(60, ready=9, processed=500)], period=10)
    assert chart["t"] == [START.timestamp() + s for s in (0, 10, 20, 60)], "a null point just after the last sample"
    assert chart["ready"] == [3, 4, None, 9]
    assert chart["processed"] == [None, 0.0, None, None], "no rate across the gap"


def test_a_counter_that_restarted_gives_no_rate() -> None:
    chart = columns([sample(0, processed=900), sample(10, processed=20), sample(20, processed=40)], period=10)
    assert chart["processed"] == [None, None, 2.0]
