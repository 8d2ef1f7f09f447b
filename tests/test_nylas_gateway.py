"""The SDK behind the gateway: real HTTP to the fake Nylas, on kept-alive connections."""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest

from jobs.errors import PermanentError, TransientError
from jobs.nylas_client import NylasGateway
from mailroom.fake_nylas import API_KEY, FakeNylas, FakeNylasServer
from tests import helpers
from tests.commands import MAILROOM
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


async def test_the_fake_fault_switches_work_over_http(fake_nylas_server: FakeNylasServer) -> None:
    """What a person tries by hand against `mailroom dev --fake-nylas`: a 429 with Retry-After through the SDK."""
    fake_nylas_server.fake.reset()
    fake_nylas_server.fake.seed("demo-grant-1")
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=fake_nylas_server.url, headers=auth) as client:
        answer = await client.post("/_fake/fail", json={"status": 429, "retry_after": 2, "times": 1})
        assert answer.status_code == 200 and answer.json()["faults"][0]["status"] == 429
        assert (await client.post("/_fake/fail", json={"times": 1})).status_code == 400, "no status: refused"
    gateway = NylasGateway(api_key=API_KEY, api_uri=fake_nylas_server.url, timeout=5, threads=1)
    try:
        with pytest.raises(TransientError) as refused:
            await gateway.find_message("demo-grant-1", "demo-grant-1-msg-1")
        assert refused.value.retry_after == 2
        found = await gateway.find_message("demo-grant-1", "demo-grant-1-msg-1")
        assert found["subject"] == "This week in email"
        with pytest.raises(PermanentError) as missing:
            await gateway.find_grant("demo-grnat-1")
        assert missing.value.status_code == 404
    finally:
        gateway.close()


@pytest.mark.timeout(30)
async def test_the_fake_stops_on_sigterm_with_an_sdk_request_in_flight() -> None:
    port = helpers.free_port()
    process = await asyncio.create_subprocess_exec(
        MAILROOM, "fake-nylas", "--port", str(port), stdout=asyncio.subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    gateway = NylasGateway(api_key=API_KEY, api_uri=url, timeout=20, threads=1)
    try:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
            await helpers.until_answering(client, "/_fake/state", within=20, what="mailroom fake-nylas")
            await client.post("/_fake/latency", json={"seconds": 15})
            in_flight = asyncio.ensure_future(gateway.find_grant("demo-grant-1"))
            # Held by the fake's latency from here on, on a kept-alive connection.
            deadline = asyncio.get_running_loop().time() + 10
            while (await client.get("/_fake/state")).json()["requests"] < 1:
                assert asyncio.get_running_loop().time() < deadline, "the SDK's request never reached the fake"
                await asyncio.sleep(0.02)
        started = asyncio.get_running_loop().time()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 128 + signal.SIGTERM
        assert asyncio.get_running_loop().time() - started < 5
        with pytest.raises(TransientError):
            await in_flight
    finally:
        gateway.close()
        if process.returncode is None:
            process.kill()
