"""Job `test_task(message)`: sleeps, then returns the message; a smoke test for the queue and the worker."""

from __future__ import annotations

import asyncio
from typing import Any

from jobs.context import JobContext


async def test_task(ctx: dict[str, Any], message: str) -> dict[str, str]:
    await asyncio.sleep(JobContext.from_ctx(ctx).settings.test_task_sleep)
    return {"status": "completed", "message": message}
