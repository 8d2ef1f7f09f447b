"""Faults under a stream of deliveries (each 1-3 times, out of order), through the soak harness of bench/soak.py on
servers of its own: nothing acknowledged is lost, every message is one email in its latest state, no draft twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import FAULTS, Options, soak


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", FAULTS)
async def test_a_stream_survives(fault: str, tmp_path: Path) -> None:
    options = Options(notifications=150, rate=60, workers=2, faults=(fault,), fault_every=1.0, outage=2.0, max_faults=2)

    report = await soak(options, tmp_path)

    assert [f["fault"] for f in report.faults] == [fault, fault], "the fault was injected, twice"
    assert report.lost == 0
    assert report.acknowledged == report.notifications
    assert report.stored == report.notifications
    assert report.emails == report.messages, "one email row per message"
    assert report.stale_emails == 0
    assert report.double_drafts == 0
    assert report.processed + report.dead == report.stored
    if fault in ("redis-restart", "postgres-restart", "nylas-errors"):
        assert report.process_restarts == 0, "API and workers ride out an outage of what they depend on"
