"""Which workers are alive and what they run, for /readyz, /queue, the dashboard and `mailroom inspect`.

Each worker refreshes its entry every few seconds: a sorted set scored by last beat (so counting the living is
one ZCOUNT, never a scan of keys) and a hash of what each one is doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)
BEAT_SECONDS = 5.0
ALIVE_WITHIN = 15.0
# A worker silent this long is gone for good (dead for /readyz after ALIVE_WITHIN; kept a while for `inspect`).
FORGET_AFTER = 10 * ALIVE_WITHIN


def keys(queue_name: str) -> tuple[str, str]:
    return f"{queue_name}:workers", f"{queue_name}:workers:info"


class Heartbeat:
    def __init__(self, redis: Redis, queue_name: str, *, concurrency: int) -> None:
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._redis = redis
        self._zset, self._info = keys(queue_name)
        self._concurrency = concurrency
        self._started = time.time()
        self.current: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # What the worker holds open and may open (README, Connection budgets), for /metrics.
        self.connections: Callable[[], dict[str, int]] | None = None

    def job_started(self, job_id: str) -> None:
        self.current[job_id] = time.time()

    def job_ended(self, job_id: str) -> None:
        self.current.pop(job_id, None)

    async def beat(self) -> None:
        info = {
            "name": self.name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self._started,
            "concurrency": self._concurrency,
            "jobs": [{"job_id": job_id, "started_at": at} for job_id, at in sorted(self.current.items())],
            "connections": self.connections() if self.connections is not None else {},
        }
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self._zset, {self.name: time.time()})
            pipe.hset(self._info, self.name, orjson.dumps(info).decode())
            pipe.zrangebyscore(self._zset, "-inf", time.time() - FORGET_AFTER)
            *_, dead = await pipe.execute()
        if dead:
            # A killed worker never says goodbye: the living forget it, or the entries would only ever grow.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrem(self._zset, *dead)
                pipe.hdel(self._info, *dead)
                await pipe.execute()

    def start(self) -> None:
        self._task = asyncio.create_task(self._beat_forever())

    async def _beat_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.beat()
            except (RedisError, OSError) as exc:
                log.warning("heartbeat.failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), BEAT_SECONDS)

    async def aclose(self) -> None:
        # Told to stop, not cancelled: a cancel landing inside a Redis pipeline can leave its connection unreleased.
        self._stopping.set()
        if self._task is not None:
            await self._task
        with contextlib.suppress(RedisError, OSError):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrem(self._zset, self.name)
                pipe.hdel(self._info, self.name)
                await pipe.execute()


async def live_workers(redis: Redis, queue_name: str) -> list[dict[str, Any]]:
    zset, info_key = keys(queue_name)
    now = time.time()
    names = await redis.zrangebyscore(zset, now - ALIVE_WITHIN, "+inf")
    if not names:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(info_key, names)
        (infos,) = await pipe.execute()
    return [orjson.loads(info) for info in infos if info]


async def newest_beat(redis: Redis, queue_name: str) -> float | None:
    """When any worker last sent a heartbeat (None: none ever did on this queue)."""
    zset, _ = keys(queue_name)
    newest = await redis.zrange(zset, -1, -1, withscores=True)
    return float(newest[0][1]) if newest else None
