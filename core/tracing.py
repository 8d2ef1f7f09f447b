"""OpenTelemetry tracing, when the `otel` extra is installed and an OTLP endpoint is set; otherwise nothing at all.

Configured only by the standard variables: OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) turns
it on; OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_* and the exporter's own
OTEL_EXPORTER_OTLP_* (headers, timeout, compression) are read by the SDK as it documents them. Spans go out over
OTLP/HTTP (protobuf); OTEL_SDK_DISABLED=true turns it off again.

One trace per notification: the API's request span is the root; the stored event keeps its W3C `traceparent`
(`webhook_events.trace_context`), so the worker's spans for that notification (the claim's wait, the Nylas fetch,
classify, act, their SQL) join the same trace however late, or on whichever worker, the event is processed: a
replay or a sweep included. Work done for many notifications at once (a batch's writes) is one span linked to each.

OpenTelemetry keeps its tracer provider in a global of its own, set once per process here; our modules only ask
`tracer()` for spans, which are no-ops until (and unless) `setup` ran.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.sampling import Sampler
    from starlette.middleware import Middleware

log = structlog.get_logger(__name__)

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.propagate import extract, inject
except ImportError:  # the `otel` extra is not installed: every helper below is a no-op
    trace = None  # type: ignore[assignment]

_state: dict[str, bool] = {"on": False}


def wanted() -> bool:
    """An OTLP endpoint is set, the SDK not disabled, and the extra installed."""
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    return bool(endpoint) and not disabled and trace is not None


def setup(default_service_name: str) -> bool:
    """Start exporting this process's spans; True when tracing is on. Call once, before the app or worker starts."""
    if _state["on"] or not wanted():
        return _state["on"]
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider, sampling
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) wins over the role's default name.
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    attributes: dict[str, Any] = {"process.pid": os.getpid()}
    if not named:
        attributes["service.name"] = default_service_name
    resource = Resource.create(attributes)
    provider = TracerProvider(resource=resource, sampler=_no_orphan_clients(sampling._get_from_env_or_default()))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    # The Nylas SDK's calls (requests) and the batch worker's fetches (aiohttp): client spans with the URL.
    RequestsInstrumentor().instrument()
    AioHttpClientInstrumentor().instrument()
    # Every statement (asyncpg's, under SQLAlchemy: its instrumentation does not support SQLAlchemy 2.1), without
    # its parameters: they would carry mail content.
    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]
    _state["on"] = True
    log.info("tracing.on", service=resource.attributes.get("service.name"))
    return True


def _no_orphan_clients(inner: Sampler) -> Sampler:
    """The sampler OTEL_TRACES_SAMPLER names, except that a client call outside any trace starts none: a batch
    runner's claim or a heartbeat's SQL is not a notification's work, and would be a one-span trace a poll."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class NoOrphanClients(Sampler):
        def should_sample(
            self, parent_context: Any, trace_id: int, name: str, kind: Any = None, *args: Any, **kwargs: Any
        ) -> SamplingResult:
            parent = trace.get_current_span(parent_context).get_span_context()
            if not parent.is_valid and kind == trace.SpanKind.CLIENT:
                return SamplingResult(Decision.DROP)
            return inner.should_sample(parent_context, trace_id, name, kind, *args, **kwargs)

        def get_description(self) -> str:
            return f"NoOrphanClients{{{inner.get_description()}}}"

    return NoOrphanClients()


def shutdown() -> None:
    """Send what is buffered (a stopping process would lose its last spans)."""
    if _state["on"]:
        provider: Any = trace.get_tracer_provider()
        with contextlib.suppress(Exception):
            provider.shutdown()


def on() -> bool:
    return _state["on"]


def middleware() -> list[Middleware]:
    """The API's request spans (the root of each notification's trace), as Starlette middleware; none when off."""
    if not _state["on"]:
        return []
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.util.http import parse_excluded_urls
    from starlette.middleware import Middleware

    # Probes and scrapes are no notification's work (OTEL_PYTHON_ASGI_EXCLUDED_URLS replaces this list), and the
    # ASGI receive/send spans would triple the spans of every request for nothing a reader needs.
    excluded = os.environ.get("OTEL_PYTHON_ASGI_EXCLUDED_URLS", "healthz,readyz,metrics,queue")
    return [
        Middleware(
            OpenTelemetryMiddleware,
            excluded_urls=parse_excluded_urls(excluded),
            exclude_spans=["receive", "send"],
        )
    ]


def current_context() -> str | None:
    """The current span's W3C traceparent, to store with work that another process picks up."""
    if not _state["on"]:
        return None
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


def _parent(traceparent: str | None) -> Any:
    return extract({"traceparent": traceparent}) if traceparent else None


@contextlib.contextmanager
def span(name: str, *, parent: str | None = None, attributes: dict[str, Any] | None = None) -> Iterator[None]:
    """A span named `name`, child of the stored `parent` traceparent (else of the current span)."""
    if not _state["on"]:
        yield
        return
    tracer = trace.get_tracer("mailroom")
    with tracer.start_as_current_span(name, context=_parent(parent), attributes=attributes):
        yield


@contextlib.contextmanager
def linked_span(name: str, parents: Sequence[str | None], attributes: dict[str, Any] | None = None) -> Iterator[None]:
    """One span for work done for many notifications at once, linked to each one's trace."""
    if not _state["on"]:
        yield
        return
    links = []
    for traceparent in {p for p in parents if p}:
        linked = trace.get_current_span(extract({"traceparent": traceparent})).get_span_context()
        if linked.is_valid:
            links.append(trace.Link(linked))
    tracer = trace.get_tracer("mailroom")
    token = otel_context.attach(otel_context.Context())  # a root of its own: the batch belongs to no one trace
    try:
        with tracer.start_as_current_span(name, links=links, attributes=attributes):
            yield
    finally:
        otel_context.detach(token)


def add_trace_id(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current trace's id on every log line written inside a span."""
    if _state["on"]:
        found = trace.get_current_span().get_span_context()
        if found.is_valid:
            event_dict["trace_id"] = format(found.trace_id, "032x")
    return event_dict
