"""Metrics that stay right with any number of API and worker processes, on any number of hosts.

prometheus-client's multiprocess mode needs one shared directory, which containers on several hosts do not have.
So every process adds its counts to Redis (buffered, flushed every second in one pipeline, off the request
path), and any API process renders the totals with prometheus-client's exposition. A process that crashes
loses at most its last second of counts.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(frozen=True)
class Spec:
    help: str
    labels: tuple[str, ...] = ()


COUNTERS = {
    "mailroom_webhooks": Spec("Webhook deliveries answered, by notification type and outcome", ("type", "outcome")),
    "mailroom_webhook_duplicates": Spec("Webhook deliveries of a notification already stored"),
    "mailroom_signature_failures": Spec("Webhook deliveries refused for a missing or wrong signature"),
    "mailroom_jobs": Spec("Stage runs finished, by stage and outcome", ("stage", "outcome")),
    "mailroom_retries": Spec("Stage runs that failed and were scheduled again", ("stage",)),
    "mailroom_dead_letters": Spec("Stage runs that used up their tries", ("stage",)),
}
HISTOGRAMS = {
    "mailroom_stage_duration_seconds": Spec("Time a stage run took", ("stage",)),
    "mailroom_webhook_to_stored_seconds": Spec("From webhook received to its email stored"),
    "mailroom_webhook_to_acted_seconds": Spec("From first webhook received to the email's actions carried out"),
}

_COUNTS = "counters"
_HISTOGRAMS = "histograms"


def _field(name: str, labels: dict[str, str], extra: str = "") -> str:
    return orjson.dumps([name, sorted(labels.items()), extra]).decode()


class Metrics:
    """Record in memory, flush to Redis in the background; `start()` and `aclose()` bracket a process's life."""

    def __init__(self, redis: Redis, *, prefix: str = "mailroom:metrics", interval: float = 1.0) -> None:
        self._redis = redis
        self._prefix = prefix
        self._interval = interval
        self._pending: dict[tuple[str, str], float] = defaultdict(float)
        self._task: asyncio.Task[None] | None = None

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        assert name in COUNTERS, name
        self._pending[(_COUNTS, _field(name, labels))] += value

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        assert name in HISTOGRAMS, name
        bucket = bisect.bisect_left(LATENCY_BUCKETS, seconds)  # index into LATENCY_BUCKETS, or len() for +Inf
        self._pending[(_HISTOGRAMS, _field(name, labels, f"b{bucket}"))] += 1
        self._pending[(_HISTOGRAMS, _field(name, labels, "sum"))] += seconds
        self._pending[(_HISTOGRAMS, _field(name, labels, "count"))] += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever())

    async def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, defaultdict(float)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for (kind, field), value in pending.items():
                    pipe.hincrbyfloat(f"{self._prefix}:{kind}", field, value)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # Keep them for the next flush rather than lose them while Redis is away.
            for key, value in pending.items():
                self._pending[key] += value
            log.warning("metrics.flush_failed", error=str(exc))

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def read(self) -> tuple[dict[str, float], dict[str, float]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(f"{self._prefix}:{_COUNTS}")
            pipe.hgetall(f"{self._prefix}:{_HISTOGRAMS}")
            counters, histograms = await pipe.execute()
        return _decode(counters), _decode(histograms)


def _decode(raw: dict[bytes, bytes]) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in raw.items()}


def render(counters: dict[str, float], histograms: dict[str, float], gauges: dict[str, tuple[str, float]]) -> bytes:
    """Prometheus text format for the totals read from Redis, plus gauges measured now."""

    class Snapshot:
        def collect(self) -> Iterator[Metric]:
            yield from _counter_families(counters)
            yield from _histogram_families(histograms)
            for name, (help_text, value) in sorted(gauges.items()):
                yield GaugeMetricFamily(name, help_text, value=value)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot())
    return generate_latest(registry)


def _counter_families(counters: dict[str, float]) -> Iterable[Metric]:
    for name, spec in COUNTERS.items():
        family = CounterMetricFamily(name, spec.help, labels=list(spec.labels))
        for field, value in counters.items():
            metric, labels, _ = orjson.loads(field)
            if metric == name:
                as_dict = dict(labels)
                family.add_metric([as_dict.get(label, "") for label in spec.labels], value)
        yield family


def _histogram_families(histograms: dict[str, float]) -> Iterable[Metric]:
    grouped: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, float]] = defaultdict(dict)
    for field, value in histograms.items():
        metric, labels, part = orjson.loads(field)
        grouped[(metric, tuple(tuple(pair) for pair in labels))][part] = value
    for name, spec in HISTOGRAMS.items():
        family = HistogramMetricFamily(name, spec.help, labels=list(spec.labels))
        for (metric, labels), parts in sorted(grouped.items()):
            if metric != name:
                continue
            cumulative, buckets = 0.0, []
            for index, bound in enumerate([*LATENCY_BUCKETS, float("inf")]):
                cumulative += parts.get(f"b{index}", 0.0)
                buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
            as_dict = dict(labels)
            family.add_metric(
                [as_dict.get(label, "") for label in spec.labels], buckets, sum_value=parts.get("sum", 0.0)
            )
        yield family
