"""Reading a request body within limits, and gunzipping it within limits."""

from __future__ import annotations

import zlib

from starlette.requests import ClientDisconnect, Request

from service.errors import BodyTooLarge, MalformedBody, UnsupportedEncoding


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
