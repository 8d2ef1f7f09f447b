"""The official `nylas` SDK behind an async face: its blocking calls run in a bounded thread pool, never on the loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import requests
from nylas import Client
from nylas.handler import http_client as nylas_http_client
from nylas.models.errors import NylasApiError, NylasSdkTimeoutError

from core.metrics import Metrics
from jobs.errors import PermanentError, TransientError

T = TypeVar("T")

_TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 507})
# Nylas filters by metadata only on the reserved keys key1..key5; mailroom tags what it creates with this one.
METADATA_KEY = "key5"


class _PooledRequests:
    """Stands in for the `requests` module inside the SDK's HTTP client.

    The SDK sends every call with `requests.request(...)`, which builds a new Session and opens a new TCP (and TLS)
    connection each time: a quarter of the worker's CPU in the benchmark, and a handshake of latency per call. Here
    each SDK thread keeps one Session, so its calls reuse a kept-alive connection. Everything else the SDK reads
    from `requests` (its exceptions) is the real module's.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session.request(method, url, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(requests, name)


def _reuse_connections() -> None:
    """Idempotent; the SDK module is shared by every client in the process, and every one of them gains."""
    if not isinstance(nylas_http_client.requests, _PooledRequests):
        nylas_http_client.requests = _PooledRequests()


class NylasGateway:
    """One SDK client and the threads its calls run on; `close()` when the worker stops."""

    def __init__(
        self, *, api_key: str, api_uri: str, timeout: float, threads: int, metrics: Metrics | None = None
    ) -> None:
        _reuse_connections()
        self._metrics = metrics
        self._client = Client(api_key=api_key, api_uri=api_uri.rstrip("/"), timeout=timeout)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="nylas")

    @property
    def client(self) -> Client:
        """The SDK client, for what sends its requests another way (jobs/message_fetch.py)."""
        return self._client

    async def find_grant(self, grant_id: str) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            return self._client.grants.find(grant_id=grant_id).data.to_dict()  # type: ignore[no-any-return]

        return await self._run(call, "find_grant")

    async def find_message(self, grant_id: str, message_id: str) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            response = self._client.messages.find(identifier=grant_id, message_id=message_id)
            return response.data.to_dict()  # type: ignore[no-any-return]

        return await self._run(call, "find_message")

    async def list_messages(
        self, grant_id: str, *, received_after: int, page_token: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        def call() -> tuple[list[dict[str, Any]], str | None]:
            params: dict[str, Any] = {"limit": limit, "received_after": received_after}
            if page_token:
                params["page_token"] = page_token
            response = self._client.messages.list(identifier=grant_id, query_params=params)
            return [m.to_dict() for m in response.data], response.next_cursor

        return await self._run(call, "list_messages")

    async def update_message(self, grant_id: str, message_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            response = self._client.messages.update(identifier=grant_id, message_id=message_id, request_body=changes)
            return response.data.to_dict()  # type: ignore[no-any-return]

        return await self._run(call, "update_message")

    async def create_draft(self, grant_id: str, draft: dict[str, Any]) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            return self._client.drafts.create(identifier=grant_id, request_body=draft).data.to_dict()  # type: ignore[no-any-return]

        return await self._run(call, "create_draft")

    async def send_message(self, grant_id: str, message: dict[str, Any]) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            return self._client.messages.send(identifier=grant_id, request_body=message).data.to_dict()  # type: ignore[no-any-return]

        return await self._run(call, "send_message")

    async def find_tagged(self, grant_id: str, *, drafts: bool, tag: str) -> dict[str, Any] | None:
        """The draft or message we created earlier with this tag in its metadata, if Nylas has it."""

        def call() -> dict[str, Any] | None:
            params: dict[str, Any] = {"metadata_pair": f"{METADATA_KEY}:{tag}", "limit": 1}
            resource = self._client.drafts if drafts else self._client.messages
            found = resource.list(identifier=grant_id, query_params=params).data
            return found[0].to_dict() if found else None

        return await self._run(call, "find_tagged")

    async def list_webhooks(self) -> list[dict[str, Any]]:
        """The application's webhook destinations (id, url, status, status_updated_at, …)."""

        def call() -> list[dict[str, Any]]:
            return [webhook.to_dict() for webhook in self._client.webhooks.list().data]

        return await self._run(call, "list_webhooks")

    async def _run(self, call: Callable[[], T], endpoint: str) -> T:
        loop = asyncio.get_running_loop()
        try:
            answer = await loop.run_in_executor(self._executor, call)
        except Exception as exc:
            self._count(endpoint, *_status_and_error(exc))
            raise translate(exc) from exc
        self._count(endpoint, "200", "none")
        return answer

    def _count(self, endpoint: str, status: str, error: str) -> None:
        if self._metrics is not None:
            self._metrics.inc("mailroom_nylas_requests", endpoint=endpoint, status=status, error=error)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def translate(exc: Exception) -> Exception:
    """Map the SDK's exceptions (nylas.md §4.6) onto retry-or-stop."""
    if isinstance(exc, NylasApiError):
        status = exc.status_code
        if status in _TRANSIENT_STATUSES or status >= 500:
            return TransientError(f"Nylas answered {status}: {exc}", retry_after=_retry_after(exc), status_code=status)
        return PermanentError(f"Nylas answered {status}: {exc}", status_code=status)
    if isinstance(exc, NylasSdkTimeoutError):
        return TransientError(f"Nylas did not answer within {exc.timeout}s")
    # Covers connection errors and non-JSON bodies (an HTML 502 from a proxy): requests.JSONDecodeError.
    if isinstance(exc, requests.RequestException):
        return TransientError(f"calling Nylas failed: {type(exc).__name__}: {exc}")
    if isinstance(exc, (KeyError, ValueError, TypeError)):
        return PermanentError(f"Nylas sent data the SDK could not read: {type(exc).__name__}: {exc}")
    return exc


def _status_and_error(exc: Exception) -> tuple[str, str]:
    """Bounded labels for a failed call: the HTTP status Nylas answered (none: no answer) and the kind of error."""
    if isinstance(exc, NylasApiError):
        status = exc.status_code
        kinds = {429: "rate_limit", 401: "auth", 403: "auth", 404: "not_found"}
        return str(status), kinds.get(status, "server_error" if status >= 500 else "client_error")
    if isinstance(exc, NylasSdkTimeoutError):
        return "none", "timeout"
    if isinstance(exc, requests.JSONDecodeError):
        return "none", "not_json"
    if isinstance(exc, requests.RequestException):
        return "none", "connection"
    return "none", "other"


def _retry_after(exc: NylasApiError) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
