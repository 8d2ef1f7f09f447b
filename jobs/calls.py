"""Every call to Nylas for a grant goes through here: the shared per-grant limit, and a cool-down after a 429."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from arq import Retry

from jobs.context import JobContext
from jobs.errors import Throttled, TransientError

T = TypeVar("T")


async def throttled(jc: JobContext, grant_id: str, call: Callable[[], Awaitable[T]]) -> T:
    wait = await jc.throttle.acquire(grant_id)
    if wait:
        raise Throttled(wait)
    try:
        return await call()
    except TransientError as exc:
        if exc.status_code == 429:
            await jc.throttle.cool_down(grant_id, exc.retry_after if exc.retry_after is not None else 1.0)
        raise


def defer_for(throttled: Throttled) -> Retry:
    """Come back when the grant has room, spread out so a flood of one grant's jobs does not return at once."""
    return Retry(defer=throttled.wait + random.uniform(0, max(0.05, throttled.wait)))
