"""Group commit for webhook deliveries: concurrent requests share one INSERT, one COMMIT and one Redis round trip.

Each request still waits for its own row to be committed before it answers, so "2xx means stored" holds. Batches
form by themselves: while one write is in flight, the requests that arrive meanwhile queue up for the next one, so a
lone request waits for nothing and a burst pays one database round trip per batch, not per request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from arq.connections import ArqRedis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import tracing
from db import webhook_events
from db.errors import DatabaseError
from db.uow import unit_of_work
from db.webhook_events import NewEvent
from jobs.enqueue import ProcessEventEnqueuer

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Recorded:
    outcome: str  # queued | received (stored; its job is left to the sweeper) | duplicate | ignored
    event_id: int


_Waiting = tuple[NewEvent, "asyncio.Future[Recorded]"]


class EventWriter:
    """Owns `writers` background tasks: `start()` in the lifespan, `aclose()` once the server takes no requests."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        queue: ArqRedis,
        *,
        max_batch: int,
        writers: int,
        batches: bool = True,
    ) -> None:
        self._sessionmaker = sessionmaker
        # With the batch worker, PostgreSQL is the queue: a stored event waits there (`received`) for a worker to
        # claim it, and the commit's NOTIFY wakes one. Without it, each event's job goes to Redis.
        self._batches = batches
        self._enqueuer = ProcessEventEnqueuer(queue)
        self._max_batch = max_batch
        self._writers = writers
        self._waiting: list[_Waiting] = []
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name=f"event-writer-{n}") for n in range(self._writers)]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        _fail(self._waiting, DatabaseError("the service is shutting down"))
        self._waiting.clear()

    async def record(self, event: NewEvent) -> Recorded:
        """Store the event (raises DatabaseError if it could not be) and queue its job (failure left to the sweeper)."""
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._waiting.append((event, future))
        self._wakeup.set()
        # A client that hangs up cancels only its own future; the shared write goes on (Nylas will redeliver, and
        # the redelivery is a duplicate).
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            if not self._waiting:
                self._wakeup.clear()
            if batch:
                await self._write_batch(batch)

    async def _write_batch(self, batch: list[_Waiting]) -> None:
        events = [event for event, _ in batch]
        try:
            # One transaction for several requests: its statements in one span, linked to each request's trace.
            with tracing.linked_span(
                "mailroom.store_events", [e.trace_context for e in events], {"mailroom.events": len(events)}
            ):
                results = await self._store(events)
        except DatabaseError as exc:
            if len(batch) > 1 and exc.refused:
                # The server refused something in this batch (not an outage): one bad row must not fail the others.
                for waiting in batch:
                    await self._write_batch([waiting])
            else:
                _fail(batch, exc)
            return
        except asyncio.CancelledError:
            _fail(batch, DatabaseError("the service is shutting down"))
            raise
        except Exception as exc:
            # A bug: these requests fail (500), the writer lives on for the next ones.
            log.exception("webhook.write_failed")
            _fail(batch, exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _store(self, events: Sequence[NewEvent]) -> list[Recorded]:
        async with unit_of_work(self._sessionmaker) as session:
            inserted = await webhook_events.record_many(session, events)
            others = [e.notification_id for e in events if e.notification_id not in inserted]
            known = await webhook_events.known(session, others) if others else {}
            if self._batches and inserted:
                await webhook_events.notify_waiting(session)
        results: list[Recorded] = []
        claimed: set[str] = set()
        to_queue: list[int] = []
        for event in events:
            nid = event.notification_id
            if nid in inserted and nid not in claimed:
                claimed.add(nid)
                event_id = inserted[nid]
                outcome = "ignored" if event.status == "ignored" else "received"
                if outcome == "received":
                    to_queue.append(event_id)
            else:
                first = known.get(nid)
                event_id = first.id if first is not None else inserted[nid]
                outcome = "duplicate"
                if first is not None and first.status == "received":
                    # The first delivery was stored but its enqueue failed; this retry from Nylas is a chance to heal.
                    to_queue.append(event_id)
            results.append(Recorded(outcome, event_id))
        if self._batches:
            # Stored is queued: the batch workers claim from the table (nothing in Redis to lose).
            return [Recorded("queued", r.event_id) if r.outcome == "received" else r for r in results]
        if to_queue and await self._queue(to_queue):
            results = [Recorded("queued", r.event_id) if r.outcome == "received" else r for r in results]
        return results

    async def _queue(self, event_ids: list[int]) -> bool:
        """Put the jobs in Redis and note it; on failure the events stay `received` for the sweeper. Never raises."""
        try:
            await self._enqueuer.enqueue(event_ids)
        except (RedisError, OSError) as exc:
            log.warning("webhook.enqueue_failed", events=len(event_ids), error=str(exc))
            return False
        try:
            async with unit_of_work(self._sessionmaker) as session:
                await webhook_events.mark_queued(session, event_ids)
        except DatabaseError as exc:
            # The jobs are in Redis and will run; only the `queued` bookkeeping is missing.
            log.warning("webhook.mark_queued_failed", events=len(event_ids), error=str(exc))
        return True


def _fail(batch: list[_Waiting], exc: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
