"""Fetching messages for the batch worker: the SDK's request, carried by aiohttp on the event loop.

The SDK's `messages.find` costs about 2.5 ms of CPU a call here (its `requests` transport on a thread, then its
dataclass models), more than the whole budget of an email at 1,000 a second. This sends the request the SDK builds
(its URL, its headers: key, User-Agent, wrapper), on one kept-alive aiohttp connection pool, and builds the SDK's own
`NylasApiError` from an error answer, so that `nylas_client.translate` gives the same retry-or-stop as every other
call (429 with Retry-After, 401/403, 404, an HTML 5xx from a proxy). About 0.3 ms a call (README, Performance).
`MAILROOM_NYLAS_FETCH=sdk` fetches through the SDK itself instead (`NylasGateway.find_message`).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import orjson
from nylas import Client
from nylas.models.errors import NylasApiError, NylasApiErrorResponse, NylasApiErrorResponseData, NylasSdkTimeoutError

from core.metrics import Metrics
from jobs.errors import TransientError
from jobs.nylas_client import NylasGateway, translate


class Fetcher(Protocol):
    async def find_message(self, grant_id: str, message_id: str) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


class HttpFetcher:
    """One aiohttp session for the worker's life (created on first use, inside the running loop)."""

    def __init__(self, client: Client, *, connections: int, metrics: Metrics | None = None) -> None:
        http = client.http_client
        self._api_server = http.api_server
        self._headers = http._build_request("GET", "/")["headers"]
        self._timeout = float(http.timeout)
        self._connections = connections
        self._metrics = metrics
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers=self._headers,
                # Nylas sends JSON; decoding is ours (orjson), and no cookies are kept between grants.
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("Accept-Encoding",),
            )
        return self._session

    async def find_message(self, grant_id: str, message_id: str) -> dict[str, Any]:
        # The path exactly as the SDK's messages.find spells it.
        url = f"{self._api_server}/v3/grants/{grant_id}/messages/{quote(message_id, safe='')}"
        try:
            async with self._open().get(url) as response:
                status, headers, body = response.status, response.headers, await response.read()
        except TimeoutError as exc:
            self._count("none", "timeout")
            raise translate(NylasSdkTimeoutError(url=url, timeout=self._timeout)) from exc
        except aiohttp.ClientError as exc:
            self._count("none", "connection")
            raise TransientError(f"calling Nylas failed: {type(exc).__name__}: {exc}") from exc
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            self._count("none", "not_json")
            raise TransientError(
                f"calling Nylas failed: JSONDecodeError: Nylas answered {status} with a body that is not JSON"
            ) from exc
        if status >= 400:
            error = _api_error(answer, status, dict(headers))
            kinds = {429: "rate_limit", 401: "auth", 403: "auth", 404: "not_found"}
            self._count(str(status), kinds.get(status, "server_error" if status >= 500 else "client_error"))
            raise translate(error) from error
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict):
            self._count(str(status), "other")
            raise translate(ValueError(f"Nylas answered {status} without a message object"))
        self._count("200", "none")
        return data

    def _count(self, status: str, error: str) -> None:
        if self._metrics is not None:
            self._metrics.inc("mailroom_nylas_requests", endpoint="find_message", status=status, error=error)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _api_error(answer: Any, status: int, headers: dict[str, str]) -> NylasApiError:
    """What the SDK's `_validate_response` raises for this answer."""
    try:
        return NylasApiError(NylasApiErrorResponse.from_dict(answer), status, headers)
    except (KeyError, TypeError, AttributeError):
        request_id = answer.get("request_id") if isinstance(answer, dict) else None
        data = NylasApiErrorResponseData(type="unknown", message=answer)
        return NylasApiError(NylasApiErrorResponse(request_id, data), status_code=status, headers=headers)


class SdkFetcher:
    """Through the SDK itself, on the gateway's threads: slower, for comparison and as a fallback."""

    def __init__(self, gateway: NylasGateway) -> None:
        self._gateway = gateway

    async def find_message(self, grant_id: str, message_id: str) -> dict[str, Any]:
        return await self._gateway.find_message(grant_id, message_id)

    async def aclose(self) -> None:
        await asyncio.sleep(0)
