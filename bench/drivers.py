"""Signed webhook traffic: wrk with a generated Lua script for the highest rates, Python clients for the rest."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

from service.signatures import sign

SECRET = "bench-webhook-secret-0001"
GRANTS = 20


def notification(n: int, run: str) -> bytes:
    """A truncated `message.created`: the worker must fetch every message from (fake) Nylas."""
    payload = {
        "specversion": "1.0",
        "type": "message.created.truncated",
        "source": "/google/emails/realtime",
        "id": f"bench-{run}-{n}",
        "time": int(time.time()),
        "webhook_delivery_attempt": 1,
        "data": {
            "application_id": "bench",
            "object": {"object": "message", "id": f"{run}-m{n}", "grant_id": f"grant_{n % GRANTS}"},
        },
    }
    return orjson.dumps(payload)


@dataclass
class Ingest:
    driver: str
    requests: int
    seconds: float
    req_per_s: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    non_2xx: int
    latencies_ms: list[float]  # empty for wrk (it reports percentiles only)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "latencies_ms"}


def percentile(sorted_values: list[float], share: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * share))]


def wrk(url: str, bodies: list[bytes], concurrency: int, workdir: Path) -> Ingest:
    """Each pre-signed body once. wrk runs for a fixed duration, so the script prints a line when the last body is
    answered and wrk is stopped with SIGINT, which makes it print its figures for the time it ran. (At most
    `concurrency` - 1 bodies go out a second time while the last answers are in flight: duplicates, cheaper.)"""
    lines = ["local bodies = {}", "local sigs = {}"]
    for n, body in enumerate(bodies, 1):
        lines.append(f"bodies[{n}] = {json.dumps(body.decode())}")
        lines.append(f'sigs[{n}] = "{sign(SECRET, body)}"')
    lines.append(
        f"""
local sent = 0
local answered = 0
request = function()
  sent = sent + 1
  local i = ((sent - 1) % {len(bodies)}) + 1
  return wrk.format("POST", "/webhooks/nylas",
    {{["Content-Type"]="application/json", ["x-nylas-signature"]=sigs[i]}}, bodies[i])
end
response = function(status, headers, body)
  answered = answered + 1
  if answered == {len(bodies)} then
    io.write("ALL-ANSWERED\\n")
    io.stdout:flush()
  end
end
"""
    )
    script = Path(tempfile.mkstemp(suffix=".lua", dir=workdir)[1])
    script.write_text("\n".join(lines))
    began = time.perf_counter()
    command = ["wrk", "-t1", f"-c{concurrency}", "-d600s", "--timeout", "10s", "--latency", "-s", str(script), url]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("ALL-ANSWERED"):
                process.send_signal(signal.SIGINT)
                break
        seconds = time.perf_counter() - began
        out = process.stdout.read()

    def ms(label: str) -> float:
        match = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = int(non_2xx.group(1)) if non_2xx else 0
    if errors:
        failed += sum(int(g) for g in errors.groups())
    return Ingest(
        driver="wrk",
        requests=requests,
        seconds=round(seconds, 3),
        req_per_s=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=ms("50%"),
        p99_ms=ms("99%"),
        p999_ms=float("nan"),
        non_2xx=failed,
        latencies_ms=[],
    )


def summarize(driver: str, seconds: float, latencies: list[float], failures: int) -> Ingest:
    """The figures of a Python-driven run: one latency (ms) per request."""
    latencies.sort()
    return Ingest(
        driver=driver,
        requests=len(latencies),
        seconds=round(seconds, 3),
        req_per_s=len(latencies) / seconds,
        p50_ms=percentile(latencies, 0.5),
        p99_ms=percentile(latencies, 0.99),
        p999_ms=percentile(latencies, 0.999),
        non_2xx=failures,
        latencies_ms=latencies,
    )


async def deliver(client: httpx.AsyncClient, body: bytes) -> tuple[bool, float]:
    """POST one signed notification: answered 200?, and how long it took in ms."""
    began = time.perf_counter()
    try:
        response = await client.post("/webhooks/nylas", content=body, headers={"x-nylas-signature": sign(SECRET, body)})
        ok = response.status_code == 200
        if not ok:
            print(f"  delivery answered {response.status_code}: {response.text[:200]}", file=sys.stderr)
    except httpx.HTTPError as exc:
        print(f"  delivery failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        ok = False
    return ok, (time.perf_counter() - began) * 1000


async def closed_loop(url: str, bodies: list[bytes], concurrency: int) -> Ingest:
    """`concurrency` clients, each sending its next body as soon as the last one is answered."""
    latencies: list[float] = []
    failures = 0
    queue = [(body, 1) for body in reversed(bodies)]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def client_loop() -> None:
            nonlocal failures
            while queue:
                body, tries = queue.pop()
                ok, ms = await deliver(client, body)
                latencies.append(ms)
                if not ok:
                    # Counted, then sent again (up to 5 tries) as Nylas would: a phase that waits for every email
                    # must get them all.
                    failures += 1
                    if tries < 5:
                        queue.insert(0, (body, tries + 1))

        began = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        seconds = time.perf_counter() - began
    return summarize("python", seconds, latencies, failures)


async def open_loop(url: str, bodies: list[bytes], rate: float) -> tuple[Ingest, dict[str, float]]:
    """Send at a steady `rate` whatever the answers do (as Nylas would); returns the send time of each notification
    (wall clock, to compare with the database's timestamps). On aiohttp: httpx costs about a millisecond of CPU a
    request, too much to keep 1,000 a second on time from one core."""
    latencies: list[float] = []
    sent_at: dict[str, float] = {}
    failures = 0
    signed = [(body, sign(SECRET, body), orjson.loads(body)["id"]) for body in bodies]
    connector = aiohttp.TCPConnector(limit=500)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base_url=url, connector=connector, timeout=timeout) as client:

        async def one(body: bytes, signature: str, notification_id: str) -> None:
            nonlocal failures
            sent_at[notification_id] = time.time()
            began = time.perf_counter()
            try:
                headers = {"x-nylas-signature": signature, "content-type": "application/json"}
                async with client.post("/webhooks/nylas", data=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            failures += not ok
            latencies.append((time.perf_counter() - began) * 1000)

        tasks = []
        start = time.perf_counter()
        for n, (body, signature, notification_id) in enumerate(signed):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body, signature, notification_id)))
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - start
    return summarize("python-open-loop", seconds, latencies, failures), sent_at
