"""The batch worker's queue is PostgreSQL: runners claim the oldest waiting events, a batch at a time.

Why not an arq job per batch: the API's group commits are a few events each under load, and arq's bookkeeping
(about 0.4 ms of CPU and several sequential Redis round trips to start and finish each job) then costs more than the
email itself (README, Performance). The events are already in PostgreSQL, durable; a claim is one statement for any
number of them, `FOR UPDATE SKIP LOCKED` shares them among workers on any number of machines, and nothing in Redis
can lose them. The API's transaction sends a NOTIFY when it stores events, so an idle runner wakes at once (a lone
notification never waits for a batch to fill); without it (a pooler that drops LISTEN) runners poll.

Batches form by themselves: while the runners are busy with a batch's fetches, new events wait, and the next claim
takes them all (up to MAILROOM_WORKER_BATCH_SIZE). Retries, replays and what the sweeper finds stay arq jobs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable
from typing import Any

import asyncpg
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from db import webhook_events
from db.errors import DatabaseError
from db.grants import GrantState
from db.states import EventStatus
from db.webhook_events import ClaimedEvent
from jobs.context import JobContext
from jobs.process_batch import claim, run_claimed

log = structlog.get_logger(__name__)
# Without a listening connection, how often an idle runner looks; with one, NOTIFY wakes it and this is a backstop.
LISTENING_POLL_S = 1.0
# Events one worker may hold claimed, per Nylas connection (MAILROOM_NYLAS_CONNECTIONS): enough for fetches to
# overlap the batches' writes, few enough that a second worker finds work.
IN_FLIGHT_PER_CONNECTION = 4
# PostgreSQL out of reach or out of connections: runners try again after a growing pause, up to this long (each try
# costs the server a refused connection), and the log says so once, then every OUTAGE_REMINDER_S.
OUTAGE_MAX_PAUSE_S = 5.0
OUTAGE_REMINDER_S = 60.0
# While an operator's pause holds every claim, runners look again this often (a pause is read every 2 s anyway).
PAUSED_POLL_S = 1.0
# A failed LISTEN is tried again this often, not on every idle moment (runners poll meanwhile).
LISTEN_RETRY_S = 30.0


class Outage:
    """The worker's view of PostgreSQL while it cannot be reached: when it began, when we last said so."""

    def __init__(self) -> None:
        self.since: float | None = None
        self._said_at = 0.0
        self._tries = 0

    def failed(self, error: Exception) -> float:
        """Record a failed try; returns how long to wait before the next one."""
        now = time.monotonic()
        if self.since is None:
            self.since, self._said_at, self._tries = now, now, 0
            log.warning("worker.database_unavailable", error=f"{type(error).__name__}: {error}", waiting=True)
        elif now - self._said_at >= OUTAGE_REMINDER_S:
            self._said_at = now
            log.warning(
                "worker.database_unavailable", error=f"{type(error).__name__}: {error}", down_s=now - self.since
            )
        self._tries += 1
        return min(OUTAGE_MAX_PAUSE_S, 0.25 * 2.0**self._tries)

    def answered(self) -> None:
        if self.since is not None:
            log.info("worker.database_back", down_s=round(time.monotonic() - self.since, 1))
            self.since = None


class Pump:
    """`start(ctx)` in the worker's start-up (or `drain(ctx)` for a burst), `aclose()` at its shut-down."""

    def __init__(self, jc: JobContext, *, listening_poll_s: float = LISTENING_POLL_S) -> None:
        self._jc = jc
        self._listening_poll_s = listening_poll_s
        self._settings = jc.settings
        # Idle runners, woken one per NOTIFY: waking them all would send every idle runner to claim the same events.
        self._idle_runners: collections.deque[asyncio.Future[None]] = collections.deque()
        self._missed = False  # a NOTIFY came while every runner was busy: the next to finish looks again
        # Events claimed and not finished. A worker holds no more than its Nylas connections can fetch in a few
        # rounds: claimed beyond that they would only wait here while another worker has nothing to do.
        self._in_flight = 0
        self._most_in_flight = IN_FLIGHT_PER_CONNECTION * jc.settings.nylas_connections
        self._starved = False
        self._closing = False
        self._runners: list[asyncio.Task[None]] = []
        self._listener: asyncpg.Connection | None = None
        self._listen_tried_at: float | None = None
        self._outage = Outage()
        self._pause = 0.0  # set by a failed claim: how long this pump's runners wait before the next
        self._batches = 0
        # What this pump's batches did, said once at shutdown: arq's own "N jobs done" line counts no batch.
        self._totals: Counter[str] = Counter()
        self._label = f"batch:{socket.gethostname()}:{os.getpid()}"

    async def start(self, ctx: dict[str, Any]) -> None:
        await self._listen()
        count = self._settings.worker_batches
        self._runners = [asyncio.create_task(self._run(ctx), name=f"batch-runner-{n}") for n in range(count)]

    async def drain(self, ctx: dict[str, Any]) -> int:
        """Run batches until no event waits; returns how many events were claimed (burst workers, `mailroom sync`)."""
        total = 0
        while claimed := await self._one(ctx):
            total += claimed
        return total

    async def aclose(self) -> None:
        """Claim nothing more; let the batches under way finish within the shutdown grace, then stop them (a
        stopped batch gives its unfinished events back)."""
        self._closing = True
        while self._idle_runners:
            if not (waiter := self._idle_runners.popleft()).done():
                waiter.set_result(None)
        if self._runners:
            _, late = await asyncio.wait(self._runners, timeout=self._settings.shutdown_grace_seconds)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._runners = []
        log.info("worker.batches_done", batches=self._batches, **dict(sorted(self._totals.items())))
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
            self._listener = None

    async def _run(self, ctx: dict[str, Any]) -> None:
        while not self._closing:
            try:
                claimed = await self._one(ctx)
            except Exception:
                # A bug or an outage must not end the runner: the events stay waiting, claimed ones go stale and
                # come back (the sweeper); look again in a moment.
                log.exception("batch.failed")
                await self._idle(1.0)
                continue
            if not claimed:
                poll = self._listening_poll_s if self.listening else self._settings.worker_poll_delay
                await self._idle(max(poll, self._pause))

    async def _one(self, ctx: dict[str, Any]) -> int:
        """Claim and run one batch; 0 when nothing was waiting."""
        # Read before the room below: between that and the reservation no other runner may run (no await).
        try:
            paused = await self._jc.pauses.current()
        except DatabaseError as exc:
            self._pause = self._outage.failed(exc)
            return 0
        # A paused process or classify stage holds every claim: the batch runs both for what it claims.
        if paused.everything or {"process", "classify"} & paused.stages:
            self._pause = PAUSED_POLL_S
            return 0
        room = self._most_in_flight - self._in_flight
        if room <= 0:
            self._starved = True  # woken when a batch under way finishes
            return 0
        limit = min(self._settings.worker_batch_size, room)
        # arq's bound for a killed job, kept for a killed batch too (README, Crash recovery).
        stale_s = self._settings.job_timeout + 10

        def take(session: AsyncSession) -> Awaitable[list[ClaimedEvent]]:
            return webhook_events.claim_next(
                session, limit=limit, stale_after_s=stale_s, paused_grants=sorted(paused.grants)
            )

        # Reserved before the claim: runners claim side by side, and each must see the others' share.
        self._in_flight += limit
        claimed: list[ClaimedEvent] = []
        states: dict[str, GrantState] = {}
        try:
            claimed, states = await claim(self._jc, take)
        except DatabaseError as exc:
            self._pause = self._outage.failed(exc)
        else:
            self._pause = 0.0
            self._outage.answered()
        finally:
            self._in_flight -= limit - len(claimed)
        if not claimed:
            return 0
        if len(claimed) == limit:
            self._wake_one()  # a full batch: more may be waiting, for another runner
        self._batches += 1
        label = f"{self._label}:{self._batches}"
        self._jc.heartbeat.job_started(label)
        try:
            # The same bound as a job's: a batch held longer would look like a killed worker's.
            async with asyncio.timeout(self._settings.job_timeout):
                # The batch's label stands for a job id in the timeline, the inline stages' runs included.
                done = await run_claimed(
                    {**ctx, "job_id": label}, claimed, states, job_id=label, give_back_to=EventStatus.RECEIVED
                )
            self._totals.update(done)
        except TimeoutError:
            log.warning("batch.timed_out", events=len(claimed), timeout_s=self._settings.job_timeout)
        finally:
            self._jc.heartbeat.job_ended(label, keeps_result=False)
            self._in_flight -= len(claimed)
            if self._starved:
                self._starved = False
                self._wake_one()
        return len(claimed)

    async def _idle(self, seconds: float) -> None:
        if self._missed or self._closing:
            self._missed = False
            return
        if not self.listening and self._may_listen_again():
            await self._listen()
        waiter = asyncio.get_running_loop().create_future()
        self._idle_runners.append(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._idle_runners.remove(waiter)

    def _wake_one(self) -> None:
        while self._idle_runners:
            waiter = self._idle_runners.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._missed = True

    def _may_listen_again(self) -> bool:
        tried = self._listen_tried_at
        return tried is None or time.monotonic() - tried >= LISTEN_RETRY_S

    @property
    def listening(self) -> bool:
        """Whether a LISTEN connection wakes the runners (otherwise they poll)."""
        return self._listener is not None and not self._listener.is_closed()

    async def _listen(self) -> None:
        """A connection of its own for LISTEN (a pooled one would be handed to other work)."""
        assert self._settings.database_url is not None
        if self._settings.database_pgbouncer:
            # In transaction pooling a LISTEN stays on a server connection that others then borrow: never woken.
            log.info("batch.listen_skipped", reason="pgbouncer", poll_s=self._settings.worker_poll_delay)
            return
        first_try = self._listen_tried_at is None
        self._listen_tried_at = time.monotonic()
        try:
            self._listener = await webhook_events.listen_waiting(
                self._settings.database_url, self._notified, connect_timeout=self._settings.db_connect_timeout
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            # Said once; a later failure is part of an outage the claims report.
            (log.warning if first_try else log.debug)(
                "batch.listen_failed", error=f"{type(exc).__name__}: {exc}", poll_s=self._settings.worker_poll_delay
            )
            self._listener = None

    def _notified(self, *_: Any) -> None:
        self._wake_one()
