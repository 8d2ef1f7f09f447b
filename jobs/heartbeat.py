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
# The jobs view's "recently finished": the ids of the last jobs any worker finished, newest first.
RECENT_KEPT = 1000


def keys(queue_name: str) -> tuple[str, str]:
    return f"{queue_name}:workers", f"{queue_name}:workers:info"


def recent_key(queue_name: str) -> str:
    return f"{queue_name}:finished"


async def finished_ids(redis: Redis, queue_name: str) -> list[str]:
    """The ids of the last RECENT_KEPT jobs finished on this queue, newest first, each once."""
    raw: list[bytes] = await redis.lrange(recent_key(queue_name), 0, RECENT_KEPT - 1)  # type: ignore[misc]
    return list(dict.fromkeys(item.decode() for item in raw))


class Heartbeat:
    def __init__(self, redis: Redis, queue_name: str, *, concurrency: int) -> None:
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._redis = redis
        self._zset, self._info = keys(queue_name)
        self._recent = recent_key(queue_name)
        self._concurrency = concurrency
        self._started = time.time()
        self.current: dict[str, float] = {}
        self._finished: list[str] = []  # since the last beat, which writes them in its pipeline (no call per job)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # What the worker holds open and may open (README, Connection budgets), for /metrics.
        self.connections: Callable[[], dict[str, int]] | None = None
        # Stage runs this process finished, by outcome (succeeded, retry, dead, ...), for the dashboard's workers.
        self.outcomes: Callable[[], dict[str, int]] | None = None

    def job_started(self, job_id: str) -> None:
        self.current[job_id] = time.time()

    def job_ended(self, job_id: str, *, keeps_result: bool = True) -> None:
        """`keeps_result`: an arq job, whose result the jobs view shows among the recently finished (a batch has
        none, and would only push jobs out of that list)."""
        self.current.pop(job_id, None)
        if keeps_result:
            self._finished.append(job_id)

    async def beat(self) -> None:
        info = {
            "name": self.name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self._started,
            "concurrency": self._concurrency,
            "jobs": [{"job_id": job_id, "started_at": at} for job_id, at in sorted(self.current.items())],
            "connections": self.connections() if self.connections is not None else {},
            "stage_runs": self.outcomes() if self.outcomes is not None else {},
            "beat_at": time.time(),
        }
        finished, self._finished = self._finished, []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                self._remember(pipe, finished)
                pipe.zadd(self._zset, {self.name: time.time()})
                pipe.hset(self._info, self.name, orjson.dumps(info).decode())
                pipe.zrangebyscore(self._zset, "-inf", time.time() - FORGET_AFTER)
                *_, dead = await pipe.execute()
        except BaseException:
            self._finished[:0] = finished
            raise
        if dead:
            # A killed worker never says goodbye: the living forget it, or the entries would only ever grow.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrem(self._zset, *dead)
                pipe.hdel(self._info, *dead)
                await pipe.execute()

    def _remember(self, pipe: Any, finished: list[str]) -> None:
        if finished:
            pipe.lpush(self._recent, *finished)
            pipe.ltrim(self._recent, 0, RECENT_KEPT - 1)

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
                self._remember(pipe, self._finished)
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
