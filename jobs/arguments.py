"""Every job's arguments checked before its body runs: Redis is a trust boundary, and anyone who can write to it can
enqueue any registered job with arguments of their choosing. A job whose arguments are not what mailroom enqueues
is refused (logged as `job.refused`, not retried) instead of running on them."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import structlog

log = structlog.get_logger(__name__)

MAX_ID = 2**63 - 1  # PostgreSQL bigint
MAX_BATCH = 10_000
Check = Callable[[object], bool]
Job = TypeVar("Job", bound=Callable[..., Awaitable[Any]])


def row_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


def row_ids(value: object) -> bool:
    """A batch's event ids: a non-empty list, no longer than a group commit may make, of row ids."""
    return isinstance(value, list) and 0 < len(value) <= MAX_BATCH and all(row_id(v) for v in value)


def flag(value: object) -> bool:
    return isinstance(value, bool)


def text(limit: int) -> Check:
    def check(value: object) -> bool:
        return isinstance(value, str) and 0 < len(value) <= limit and "\x00" not in value

    return check


def optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def timestamp(value: object) -> bool:
    """Unix seconds from 2000 to 2100: what mailroom enqueues, and nothing a datetime cannot hold."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 946_684_800 <= value <= 4_102_444_800
    )


def checked(**checks: Check) -> Callable[[Job], Job]:
    """Refuse a call whose arguments (after `ctx`) fail their checks, or that has arguments the job does not take."""

    def decorate(job: Job) -> Job:
        signature = inspect.signature(job)

        @functools.wraps(job)
        async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            try:
                bound = signature.bind(ctx, *args, **kwargs)
            except TypeError as exc:
                return _refuse(ctx, job, f"arguments do not fit: {exc}")
            for name, value in list(bound.arguments.items())[1:]:
                check = checks.get(name)
                if check is None or not check(value):
                    return _refuse(ctx, job, f"argument {name} is not what mailroom enqueues: {type(value).__name__}")
            return await job(ctx, *args, **kwargs)

        return cast(Job, run)

    return decorate


def _refuse(ctx: dict[str, Any], job: Callable[..., Awaitable[Any]], reason: str) -> str:
    log.warning("job.refused", job=job.__name__, job_id=ctx.get("job_id"), reason=reason)
    return f"refused: {reason}"
