"""Security headers on every answer: no MIME sniffing, no framing, no referrer; the dashboard adds its own CSP."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

WEBHOOK_PATH = "/webhooks/nylas"
HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)


class SecurityHeaders:
    """ASGI middleware; a response that sets one of these headers itself (the dashboard's CSP) keeps its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Nylas's deliveries are answered to a server, not rendered by a browser: no headers to add on the hot path.
        if scope["type"] != "http" or (scope["method"] == "POST" and scope["path"] == WEBHOOK_PATH):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(header for header in HEADERS if header[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
