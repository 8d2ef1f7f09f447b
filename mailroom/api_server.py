"""The uvicorn server that carries the API, built the same way for `mailroom api` and `mailroom dev`."""

from __future__ import annotations

import uvicorn

from core.settings import Settings
from mailroom.http_protocol import bounded_protocol


def api_server(settings: Settings) -> uvicorn.Server:
    from service.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        http=bounded_protocol(settings),
        limit_concurrency=settings.max_concurrency,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or "127.0.0.1",
    )
    return uvicorn.Server(config)
