"""`python -m bench.noop_worker REDIS_URL QUEUE`: an arq worker whose only job does nothing, run until its queue is
empty. What it costs per job is arq's own cost, the floor under any job of ours."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvloop
from arq import Worker
from arq.connections import RedisSettings

from jobs.enqueue import deserialize, serialize


async def noop(ctx: dict[str, Any], n: int) -> None:
    return None


async def run(redis_url: str, queue: str) -> None:
    worker = Worker(
        functions=[noop],
        redis_settings=RedisSettings.from_dsn(redis_url),
        queue_name=queue,
        burst=True,
        max_jobs=100,
        poll_delay=0.01,
        keep_result=60,
        job_serializer=serialize,
        job_deserializer=deserialize,
        handle_signals=False,
    )
    try:
        await worker.async_run()
    finally:
        await worker.close()


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run(sys.argv[1], sys.argv[2]))
