"""The official `nylas` SDK behind an async face: its blocking calls run in a bounded thread pool, never on the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import requests
from nylas import Client
from nylas.models.errors import NylasApiError, NylasSdkTimeoutError

from jobs.errors import PermanentError, TransientError

T = TypeVar("T")

_TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 507})


class NylasGateway:
    """One SDK client and the threads its calls run on; `close()` when the worker stops."""

    def __init__(self, *, api_key: str, api_uri: str, timeout: float, threads: int) -> None:
        self._client = Client(api_key=api_key, api_uri=api_uri.rstrip("/"), timeout=timeout)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="nylas")

    async def find_message(self, grant_id: str, message_id: str) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            response = self._client.messages.find(identifier=grant_id, message_id=message_id)
            return response.data.to_dict()  # type: ignore[no-any-return]

        return await self._run(call)

    async def _run(self, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, call)
        except Exception as exc:
            raise translate(exc) from exc

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def translate(exc: Exception) -> Exception:
    """Map the SDK's exceptions (nylas.md §4.6) onto retry-or-stop."""
    if isinstance(exc, NylasApiError):
        status = exc.status_code
        if status in _TRANSIENT_STATUSES or status >= 500:
            return TransientError(f"Nylas answered {status}: {exc}", retry_after=_retry_after(exc))
        return PermanentError(f"Nylas answered {status}: {exc}", status_code=status)
    if isinstance(exc, NylasSdkTimeoutError):
        return TransientError(f"Nylas did not answer within {exc.timeout}s")
    # Covers connection errors and non-JSON bodies (an HTML 502 from a proxy): requests.JSONDecodeError.
    if isinstance(exc, requests.RequestException):
        return TransientError(f"calling Nylas failed: {type(exc).__name__}: {exc}")
    if isinstance(exc, (KeyError, ValueError, TypeError)):
        return PermanentError(f"Nylas sent data the SDK could not read: {type(exc).__name__}: {exc}")
    return exc


def _retry_after(exc: NylasApiError) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
