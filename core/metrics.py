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
import functools
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
    # Label sets exported at 0 before anything happened: Prometheus's increase() and rate() count an event only
    # from a series that existed before it, so every series an alert reads must be there from the first scrape.
    zeros: tuple[tuple[str, ...], ...] = ()


STAGES = ("process", "classify", "act")
WEBHOOK_CODES = ("200", "400", "401", "413", "415", "422", "500", "503")
NYLAS_ENDPOINTS = (
    "find_grant",
    "find_message",
    "list_messages",
    "update_message",
    "create_draft",
    "send_message",
    "find_tagged",
    "list_webhooks",
)

COUNTERS = {
    "mailroom_webhooks": Spec("Webhook deliveries answered, by notification type and outcome", ("type", "outcome")),
    "mailroom_webhook_responses": Spec(
        "Answers to POST /webhooks/nylas by HTTP status, and whether the delivery carried a signature header",
        ("code", "signed"),
        tuple((code, signed) for code in WEBHOOK_CODES for signed in ("true", "false")),
    ),
    "mailroom_webhook_delivery_attempts": Spec(
        "Notifications stored, by the delivery attempt Nylas reported (1 is the first try; more: Nylas retried)",
        ("attempt",),
        (("1",), ("2",), ("3",), ("4+",)),
    ),
    "mailroom_nylas_fetches_saved": Spec(
        "Message fetches not made because the batch held several notifications of one message (fetched once)",
        zeros=((),),
    ),
    "mailroom_webhook_duplicates": Spec("Webhook deliveries of a notification already stored"),
    "mailroom_signature_failures": Spec("Webhook deliveries refused for a missing or wrong signature", zeros=((),)),
    "mailroom_jobs": Spec("Stage runs finished, by stage and outcome", ("stage", "outcome")),
    "mailroom_retries": Spec(
        "Stage runs that failed and were scheduled again", ("stage",), tuple((s,) for s in STAGES)
    ),
    "mailroom_dead_letters": Spec("Stage runs that used up their tries", ("stage",), tuple((s,) for s in STAGES)),
    "mailroom_nylas_requests": Spec(
        "Calls to the Nylas API by SDK method, HTTP status (none: no answer) and error kind",
        ("endpoint", "status", "error"),
        tuple((endpoint, "429", "rate_limit") for endpoint in NYLAS_ENDPOINTS),
    ),
}
HISTOGRAMS = {
    "mailroom_webhook_duration_seconds": Spec("Time to answer a webhook delivery, by HTTP status", ("code",)),
    "mailroom_stage_duration_seconds": Spec("Time a stage run took", ("stage",)),
    "mailroom_webhook_to_stored_seconds": Spec("From webhook received to its email stored"),
    "mailroom_webhook_to_acted_seconds": Spec("From first webhook received to the email's actions carried out"),
}

_COUNTS = "counters"
_HISTOGRAMS = "histograms"


def _field(name: str, labels: dict[str, str], extra: str = "") -> str:
    return _field_of(name, tuple(sorted(labels.items())), extra)


@functools.lru_cache(maxsize=4096)
def _field_of(name: str, labels: tuple[tuple[str, str], ...], extra: str) -> str:
    """The Redis hash field for one series (cached: the webhook counts several series on every request)."""
    return orjson.dumps([name, labels, extra]).decode()


class Metrics:
    """Record in memory, flush to Redis in the background; `start()` and `aclose()` bracket a process's life."""

    def __init__(self, redis: Redis, *, prefix: str = "mailroom:metrics", interval: float = 1.0) -> None:
        self._redis = redis
        self._prefix = prefix
        self._interval = interval
        self._pending: dict[tuple[str, str], float] = defaultdict(float)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # This process's own stage runs by outcome since it started (the totals above are every process's).
        self._job_outcomes: dict[str, int] = defaultdict(int)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        assert name in COUNTERS, name
        self._pending[(_COUNTS, _field(name, labels))] += value
        if name == "mailroom_jobs":
            self._job_outcomes[labels.get("outcome", "")] += int(value)

    def job_outcomes(self) -> dict[str, int]:
        return dict(self._job_outcomes)

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
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
            await self.flush()

    async def aclose(self) -> None:
        # Told to stop, not cancelled: a cancel landing inside a Redis pipeline can leave its connection unreleased.
        self._stopping.set()
        if self._task is not None:
            await self._task
        await self.flush()

    async def read(self) -> tuple[dict[str, float], dict[str, float]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(f"{self._prefix}:{_COUNTS}")
            pipe.hgetall(f"{self._prefix}:{_HISTOGRAMS}")
            counters, histograms = await pipe.execute()
        return _decode(counters), _decode(histograms)


def total(counters: dict[str, float], name: str, **match: str) -> float:
    """The sum of a counter's series whose labels include `match` (what `read()` returned, no other process asked)."""
    wanted = set(match.items())
    found = 0.0
    for field, value in counters.items():
        series, labels, _ = orjson.loads(field)
        if series == name and wanted <= {tuple(pair) for pair in labels}:
            found += value
    return found


def _decode(raw: dict[bytes, bytes]) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in raw.items()}


@dataclass(frozen=True)
class Gauge:
    """A value measured at scrape time; `values` maps label values (in `labels` order) to the value."""

    help: str
    values: dict[tuple[str, ...], float]
    labels: tuple[str, ...] = ()

    @classmethod
    def single(cls, help: str, value: float) -> Gauge:
        return cls(help, {(): value})


def render(counters: dict[str, float], histograms: dict[str, float], gauges: dict[str, Gauge]) -> bytes:
    """Prometheus text format for the totals read from Redis, plus gauges measured now."""

    class Snapshot:
        def collect(self) -> Iterator[Metric]:
            yield from _counter_families(counters)
            yield from _histogram_families(histograms)
            for name, gauge in sorted(gauges.items()):
                family = GaugeMetricFamily(name, gauge.help, labels=list(gauge.labels))
                for label_values, value in sorted(gauge.values.items()):
                    family.add_metric(list(label_values), value)
                yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot())
    return generate_latest(registry)


def _counter_families(counters: dict[str, float]) -> Iterable[Metric]:
    for name, spec in COUNTERS.items():
        family = CounterMetricFamily(name, spec.help, labels=list(spec.labels))
        values = dict.fromkeys(spec.zeros, 0.0)
        for field, value in counters.items():
            metric, labels, _ = orjson.loads(field)
            if metric == name:
                as_dict = dict(labels)
                values[tuple(as_dict.get(label, "") for label in spec.labels)] = value
        for label_values, value in sorted(values.items()):
            family.add_metric(list(label_values), value)
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
