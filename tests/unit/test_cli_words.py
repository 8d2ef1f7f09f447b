"""What the CLI says in its own words: arq's shutdown line, and URLs with their passwords hidden."""

from __future__ import annotations

import logging
import signal

import pytest

from core.logs import WorkerStopInOurWords
from core.problems import redacted


def arq_line(message: str, *args: object) -> str:
    record = logging.LogRecord("arq.worker", logging.INFO, __file__, 1, message, args, None)
    assert WorkerStopInOurWords().filter(record)
    return record.getMessage()


def test_a_stop_after_ctrl_c_is_not_called_sigusr1_and_deferrals_are_not_retries() -> None:
    said = arq_line(
        "shutdown on %s ◆ %d jobs complete ◆ %d failed ◆ %d retries ◆ %d ongoing to cancel",
        signal.SIGUSR1.name,
        3,
        0,
        12,
        1,
    )
    assert said == (
        "worker stopping (asked to stop): 3 jobs done, 0 failed, 12 put back for later (retries and throttle waits), "
        "1 running, cancelled and handed back to the queue"
    )


def test_other_arq_lines_pass_unchanged() -> None:
    assert arq_line("%6.2fs ! %s max retries %d exceeded", 1.5, "job", 3) == "  1.50s ! job max retries 3 exceeded"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("postgresql://me:s3cret@db:5432/app", "postgresql://me:***@db:5432/app"),
        (
            "postgresql://me@db/app?password=s3cret&sslmode=require",
            "postgresql://me@db/app?password=%2A%2A%2A&sslmode=require",
        ),
        ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
    ],
)
def test_passwords_in_urls_are_hidden(url: str, shown: str) -> None:
    assert redacted(url) == shown
