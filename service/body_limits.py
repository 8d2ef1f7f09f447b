"""Reading a request body within limits, and gunzipping it within limits."""

from __future__ import annotations

import zlib

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTooLarge, MalformedBody, UnsupportedEncoding

# Login forms, replay filters and any other admin body are small; nothing else in the API needs more.
ADMIN_BODY_LIMIT = 64 * 1024


class BoundedBodies:
    """ASGI middleware: no body is read past its route's limit, whichever endpoint reads it (a 50 MB login form once
    took the API over its memory limit). A declared Content-Length over the limit is refused before anything is
    read; a chunked body is cut off where it crosses the limit. Paths in `own_limit` bound their bodies themselves
    (the webhook, with MAILROOM_MAX_BODY_BYTES) and are passed through untouched, off the hot path."""

    def __init__(self, app: ASGIApp, *, limit: int = ADMIN_BODY_LIMIT, own_limit: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.limit = limit
        self.own_limit = own_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.own_limit:
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                refused = BodyTooLarge(f"the body is {int(value)} bytes; the limit here is {self.limit}")
                answer = JSONResponse({"error": refused.code, "detail": refused.detail}, status_code=413)
                await answer(scope, receive, send)
                return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(f"the body is over the limit of {self.limit} bytes here")
            return message

        await self.app(scope, bounded, send)


async def read_limited(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) anything over `limit` bytes without reading past it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"the body is over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise MalformedBody("the client went away before the body was complete") from exc
    return b"".join(chunks)


def decode_content(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo the Content-Encoding (only gzip is used by Nylas), never producing more than `limit` bytes."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise UnsupportedEncoding(f"Content-Encoding {encoding!r} is not supported; send identity or gzip")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise MalformedBody(f"the body is not valid gzip: {exc}") from exc
    if len(out) > limit:
        raise BodyTooLarge(f"the body inflates to more than the limit of {limit} bytes")
    if not inflater.eof:
        raise MalformedBody("the gzip stream is truncated")
    if inflater.unused_data:
        raise MalformedBody("there is data after the end of the gzip stream")
    return out
