"""Logging set-up for every entry point: JSON lines in production, readable lines in a terminal.

Our own logs and the standard-library logs of arq, uvicorn and Alembic go through the same renderer.
"""

from __future__ import annotations

import logging
import sys
from typing import ClassVar

import orjson
import structlog

from core import tracing


def _json_serializer(value: object, **_: object) -> str:
    return orjson.dumps(value, default=str).decode()


class WorkerStopInOurWords(logging.Filter):
    """arq says `shutdown on SIGUSR1 ◆ 3 jobs complete ◆ 0 failed ◆ 12 retries …` when dev stops after Ctrl-C (it
    signals itself SIGUSR1) and counts every throttle deferral as a retry: both read as faults that did not happen."""

    REASONS: ClassVar[dict[str, str]] = {"SIGUSR1": "asked to stop", "SIGTERM": "SIGTERM", "SIGINT": "Ctrl-C"}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if isinstance(message, str) and message.startswith("shutdown on %s") and len(record.args or ()) == 5:
            name, done, failed, deferred, last = record.args  # type: ignore[misc]
            if "to be completed" in message:
                tail = "still running, given time to finish"
            elif "wait complete" in message:
                tail = "unfinished, cancelled and handed back to the queue"
            else:
                tail = "running, cancelled and handed back to the queue"
            record.msg = (
                "worker stopping (%s): %d jobs done, %d failed, "
                "%d put back for later (retries and throttle waits), %d %s"
            )
            record.args = (self.REASONS.get(str(name), str(name)), done, failed, deferred, last, tail)
        return True


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        tracing.add_trace_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_json_serializer)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Calls below the level are no-ops that build no event at all: the webhook logs every delivery at INFO,
        # and at WARNING that line must cost nothing (it was ~5% of a request's CPU as a stdlib-filtered call).
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.processors.format_exc_info],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # A line per SQL statement or per HTTP request is noise at INFO; these libraries say what matters at WARNING.
    arq_worker = logging.getLogger("arq.worker")
    if not any(isinstance(f, WorkerStopInOurWords) for f in arq_worker.filters):
        arq_worker.addFilter(WorkerStopInOurWords())
    for noisy in ("sqlalchemy.engine", "uvicorn.access", "urllib3", "pgserver", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
