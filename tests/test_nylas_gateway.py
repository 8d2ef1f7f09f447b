"""The SDK behind the gateway: real HTTP to the fake Nylas, on kept-alive connections."""

from __future__ import annotations

import asyncio

from jobs.nylas_client import NylasGateway
from mailroom.fake_nylas import API_KEY, FakeNylas, FakeNylasServer
from tests.notifications import message


async def test_calls_reuse_one_connection_per_sdk_thread(
    fake_nylas: FakeNylas, fake_nylas_server: FakeNylasServer
) -> None:
    """The SDK on its own opens a connection per call; 30 calls on 3 threads must need at most 3."""
    for n in range(30):
        fake_nylas.add_message(message(message_id=f"m{n}"))
    gateway = NylasGateway(api_key=API_KEY, api_uri=fake_nylas_server.url, timeout=5, threads=3)
    try:
        for batch in range(10):
            found = await asyncio.gather(*(gateway.find_message("grant_1", f"m{batch * 3 + k}") for k in range(3)))
            assert [m["id"] for m in found] == [f"m{batch * 3 + k}" for k in range(3)]
    finally:
        gateway.close()

    ports = {r.client_port for r in fake_nylas.requests}
    assert len(fake_nylas.requests) == 30
    assert 1 <= len(ports) <= 3
