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
    rate = (await jc.pauses.current()).rates.get(grant_id)  # an operator's runtime rate, if set
    wait = await jc.throttle.acquire(grant_id, rate=rate)
    if wait:
        raise Throttled(wait)
    try:
        return await call()
    except TransientError as exc:
        await note_rate_limit(jc, grant_id, exc)
        raise


async def note_rate_limit(jc: JobContext, grant_id: str, exc: TransientError) -> None:
    """A 429 slows the whole grant down (every worker), not just the job that got it."""
    if exc.status_code == 429:
        await jc.throttle.cool_down(grant_id, exc.retry_after if exc.retry_after is not None else 1.0)


def defer_for(throttled: Throttled) -> Retry:
    """Come back when the grant has room, spread out so a flood of one grant's jobs does not return at once."""
    return Retry(defer=throttled.wait + random.uniform(0, max(0.05, throttled.wait)))
