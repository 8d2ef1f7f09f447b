"""uvicorn's HTTP protocol with the limits a public edge needs: bounded request heads, and time limits on slow heads
and bodies.

httptools (uvicorn's fast parser) buffers a header until it ends: two 100 MB headers took the API to 411 MB and
stalled other requests. Here every byte received before the end of the head is counted, and past
MAILROOM_MAX_HEADER_BYTES the connection is answered 431 and closed. A head that takes longer than
MAILROOM_HEADER_TIMEOUT_SECONDS, or a body longer than MAILROOM_BODY_TIMEOUT_SECONDS, is answered 408 (slowloris).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.settings import Settings

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 32 * 1024
    header_timeout = 10.0
    body_timeout = 30.0

    _head_bytes = 0
    _parsed_head_bytes = 0
    _in_head = True
    _refused = False
    _timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered already: what the client still sends is read and dropped (see _refuse)
        in_head = self._in_head
        super().data_received(data)
        # Counted only while the head is still incomplete after this read: a read that finished the head also
        # carries the start of the body, which is not head. The parser holds at most one read past the limit.
        if in_head and self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._refuse(431)

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        """Exact sizes from the parser, for a head that arrives (and ends) within one read."""
        self._parsed_head_bytes += size
        if self._parsed_head_bytes > self.max_header_bytes and not self._refused:
            self._refuse(431)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = self._parsed_head_bytes = 0
        self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._refused:
            return  # refused while parsing this head: no application runs for it
        self._arm(self.body_timeout)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return  # the lingering close's timer stays armed
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._refuse, 408)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _refuse(self, status: int) -> None:
        """Answer `status` and close; an application already running for this request sees a disconnect."""
        self._disarm()
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            self.transport.close()  # too late for a status line: cut the connection
            return
        if cycle is not None:
            cycle.disconnected = True
            cycle.message_event.set()
        body = _REASONS[status]
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, _REASONS[status], len(body), body)
        )
        # A lingering close, as nginx does: closing with unread data would send a reset that can destroy the answer
        # before the client reads it. So: the answer, then end of stream, then drop what still arrives, briefly.
        self._refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._timer = self.loop.call_later(2.0, self.transport.close)


def bounded_protocol(settings: Settings) -> type[BoundedHttpToolsProtocol]:
    """The protocol class with this process's limits (uvicorn builds one instance per connection)."""
    return type(
        "BoundedHttpTools",
        (BoundedHttpToolsProtocol,),
        {
            "max_header_bytes": settings.max_header_bytes,
            "header_timeout": settings.header_timeout_seconds,
            "body_timeout": settings.body_timeout_seconds,
        },
    )
