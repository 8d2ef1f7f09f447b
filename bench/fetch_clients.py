"""`python -m bench.fetch_clients`: the client CPU of one message fetch, by the ways the worker could make it.

Each client fetches --calls messages from a fake Nylas (a process of its own, answering after --latency seconds)
with --concurrency in flight, after 100 warm-up calls, and reports this process's CPU per call (user + system) and
the calls a second. The blocking clients run on a thread pool of --concurrency threads, as the SDK must.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import orjson
import requests
import urllib3
import uvloop
from nylas import Client

from bench import procs
from bench.ceilings import wait_http
from jobs.message_fetch import HttpFetcher
from jobs.nylas_client import NylasGateway
from mailroom.fake_nylas import API_KEY


def path(n: int) -> str:
    return f"/v3/grants/grant_{n % 20}/messages/m{n}"


async def measure(name: str, call: Callable[[int], Awaitable[Any]], calls: int, concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            await call(n)

    await asyncio.gather(*(one(n) for n in range(100)))
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(100, 100 + calls)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"  {name:<44} {cpu / calls * 1000:6.3f} ms CPU a call   {calls / wall:6.0f} calls/s", flush=True)


def on_threads(blocking: Callable[[int], Any], threads: int) -> Callable[[int], Awaitable[Any]]:
    pool = ThreadPoolExecutor(threads)

    async def call(n: int) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, blocking, n)

    return call


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fetch_clients", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    port = procs.free_port()
    command = [procs.PYTHON, "-m", "mailroom.fake_nylas", "--port", str(port), "--latency", str(args.latency)]
    fake = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {API_KEY}", "Accept": "application/json"}
    try:
        await wait_http(f"{url}/v3/grants/none")
        print(f"{args.calls} fetches, {args.concurrency} in flight, fake Nylas answering after {args.latency}s")
        gateway = NylasGateway(api_key=API_KEY, api_uri=url, timeout=10, threads=args.concurrency)
        await measure(
            "nylas SDK messages.find (kept-alive sessions)",
            lambda n: gateway.find_message(f"grant_{n % 20}", f"m{n}"),
            args.calls,
            args.concurrency,
        )
        gateway.close()
        sdk = Client(api_key=API_KEY, api_uri=url)
        await measure(
            "nylas SDK transport, no models (_execute)",
            on_threads(lambda n: sdk.http_client._execute("GET", path(n)), args.concurrency),
            args.calls,
            args.concurrency,
        )
        local = threading.local()

        def with_requests(n: int) -> Any:
            session = getattr(local, "session", None) or requests.Session()
            local.session = session
            return orjson.loads(session.get(url + path(n), headers=headers).content)

        await measure(
            "requests.Session + orjson", on_threads(with_requests, args.concurrency), args.calls, args.concurrency
        )
        pool = urllib3.PoolManager(maxsize=args.concurrency)
        await measure(
            "urllib3 + orjson",
            on_threads(
                lambda n: orjson.loads(pool.request("GET", url + path(n), headers=headers).data), args.concurrency
            ),
            args.calls,
            args.concurrency,
        )
        async with aiohttp.ClientSession() as session:

            async def with_aiohttp(n: int) -> Any:
                async with session.get(url + path(n), headers=headers) as response:
                    return orjson.loads(await response.read())

            await measure("aiohttp + orjson", with_aiohttp, args.calls, args.concurrency)
        fetcher = HttpFetcher(Client(api_key=API_KEY, api_uri=url, timeout=10), connections=args.concurrency)
        await measure(
            "mailroom's HttpFetcher (aiohttp, SDK errors)",
            lambda n: fetcher.find_message(f"grant_{n % 20}", f"m{n}"),
            args.calls,
            args.concurrency,
        )
        await fetcher.aclose()
    finally:
        procs.stop([fake])


if __name__ == "__main__":
    uvloop.run(main())
