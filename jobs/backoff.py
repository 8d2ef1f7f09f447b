"""Retry delays: exponential with full jitter, capped, and never shorter than the server asked for."""

from __future__ import annotations

import random

# A server's Retry-After is honoured beyond our own cap, but not without limit.
RETRY_AFTER_CEILING = 3600.0


def retry_delay(
    attempt: int, *, base: float, cap: float, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Delay before try `attempt + 1`, counting from 1. Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    delay = (rng or random).uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_CEILING))
    return delay
