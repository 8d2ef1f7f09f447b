"""Repository for ``webhook_events``: the durable record of every notification we acknowledged."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import asyncpg
from sqlalchemy import DateTime, Integer, Table, Text, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import WebhookEvent
from db.states import EventStatus
from db.uow import execute_core

# States a job may (re)start from. `processed` and `ignored` are final; `dead` and `parked` wait for a replay
# or for their grant to come back.
RUNNABLE = (EventStatus.RECEIVED, EventStatus.QUEUED, EventStatus.PROCESSING)


@dataclass(frozen=True, slots=True)
class NewEvent:
    notification_id: str
    type: str
    source: str | None
    grant_id: str | None
    object_id: str | None
    notified_at: datetime
    delivery_attempt: int | None
    payload_json: str
    status: str
    trace_context: str | None = None  # the storing request's W3C traceparent, when tracing is on


@dataclass(frozen=True, slots=True)
class Known:
    id: int
    status: str


# One statement for any number of events: arrays in, one row per new event out. Events already stored (a
# redelivery, or the same notification twice in one batch) are skipped by the unique notification id.
_RECORD_MANY = text(
    """
    INSERT INTO webhook_events
        (notification_id, type, source, grant_id, object_id, notified_at, delivery_attempt, payload, status,
         trace_context)
    SELECT n, t, s, g, o, at, d, p::jsonb, st, tc
    FROM unnest(CAST(:n AS text[]), CAST(:t AS text[]), CAST(:s AS text[]), CAST(:g AS text[]), CAST(:o AS text[]),
                CAST(:at AS timestamptz[]), CAST(:d AS integer[]), CAST(:p AS text[]), CAST(:st AS text[]),
                CAST(:tc AS text[]))
         AS batch (n, t, s, g, o, at, d, p, st, tc)
    ON CONFLICT (notification_id) DO NOTHING
    RETURNING notification_id, id
    """
).bindparams(
    bindparam("n", type_=ARRAY(Text)),
    bindparam("t", type_=ARRAY(Text)),
    bindparam("s", type_=ARRAY(Text)),
    bindparam("g", type_=ARRAY(Text)),
    bindparam("o", type_=ARRAY(Text)),
    bindparam("at", type_=ARRAY(DateTime(timezone=True))),
    bindparam("d", type_=ARRAY(Integer)),
    bindparam("p", type_=ARRAY(Text)),
    bindparam("st", type_=ARRAY(Text)),
    bindparam("tc", type_=ARRAY(Text)),
)


async def record_many(session: AsyncSession, events: Sequence[NewEvent]) -> dict[str, int]:
    """Insert the events not stored yet; returns notification id -> id of each row this call inserted."""
    rows = await session.execute(
        _RECORD_MANY,
        {
            "n": [e.notification_id for e in events],
            "t": [e.type for e in events],
            "s": [e.source for e in events],
            "g": [e.grant_id for e in events],
            "o": [e.object_id for e in events],
            "at": [e.notified_at for e in events],
            "d": [e.delivery_attempt for e in events],
            "p": [e.payload_json for e in events],
            "st": [e.status for e in events],
            "tc": [e.trace_context for e in events],
        },
    )
    return {notification_id: event_id for notification_id, event_id in rows}


async def known(session: AsyncSession, notification_ids: Sequence[str]) -> dict[str, Known]:
    """The stored event (id and status) of each of these notification ids that is stored."""
    stmt = select(WebhookEvent.notification_id, WebhookEvent.id, WebhookEvent.status).where(
        WebhookEvent.notification_id.in_(notification_ids)
    )
    return {nid: Known(id=event_id, status=status) for nid, event_id, status in await session.execute(stmt)}


async def get(session: AsyncSession, event_id: int) -> WebhookEvent | None:
    return await session.get(WebhookEvent, event_id)


async def mark_queued(session: AsyncSession, event_ids: Sequence[int]) -> None:
    """Record that their jobs are in Redis; one a worker already started is left alone."""
    await session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id.in_(event_ids), WebhookEvent.status == EventStatus.RECEIVED)
        .values(status=EventStatus.QUEUED, updated_at=func.now())
    )


async def start_processing(
    session: AsyncSession, event_id: int, *, stale_after_s: float | None = None
) -> WebhookEvent | None:
    """Claim the event for a run and count the attempt; None when it is already done (a re-run is a no-op), or, with
    `stale_after_s`, held by a run younger than that (a batch worker's: the two must not run it side by side)."""
    held_by_another = WebhookEvent.status == EventStatus.PROCESSING
    if stale_after_s is not None:
        held_by_another = held_by_another & (
            WebhookEvent.updated_at >= func.now() - func.make_interval(0, 0, 0, 0, 0, 0, stale_after_s)
        )
    stmt = (
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, WebhookEvent.status.in_(RUNNABLE), ~held_by_another)
        .values(status=EventStatus.PROCESSING, attempts=WebhookEvent.attempts + 1, updated_at=func.now())
        .returning(WebhookEvent)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


_EVENTS = cast(Table, WebhookEvent.__table__)
_MARK_PROCESSED = (
    update(_EVENTS)
    .where(_EVENTS.c.id == bindparam("event_id"))
    .values(
        status=EventStatus.PROCESSED,
        last_error=None,
        processed_at=func.now(),
        updated_at=func.now(),
        # The body is stored once, in emails.body: a processed notification no longer needs its copy.
        # (Left alone otherwise: rewriting an unchanged JSONB value costs PostgreSQL CPU on every event.)
        payload=text(
            "CASE WHEN payload->'data'->'object' ? 'body' THEN payload #- '{data,object,body}' ELSE payload END"
        ),
    )
)


async def mark_processed(session: AsyncSession, event_id: int) -> None:
    await execute_core(session, _MARK_PROCESSED, {"event_id": event_id})


async def mark_attempt_failed(session: AsyncSession, event_id: int, *, error: str, final: bool) -> None:
    """A failed run: back to `queued` while a retry is scheduled, `dead` (a dead letter) once the tries are spent."""
    await session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, WebhookEvent.status == EventStatus.PROCESSING)
        .values(
            status=EventStatus.DEAD if final else EventStatus.QUEUED, last_error=error[:4000], updated_at=func.now()
        )
    )


async def park(session: AsyncSession, event_id: int, *, reason: str) -> None:
    await session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id)
        .values(status=EventStatus.PARKED, last_error=reason, updated_at=func.now())
    )


async def unpark_grant(session: AsyncSession, grant_id: str) -> list[int]:
    stmt = (
        update(WebhookEvent)
        .where(WebhookEvent.grant_id == grant_id, WebhookEvent.status == EventStatus.PARKED)
        .values(status=EventStatus.QUEUED, attempts=0, updated_at=func.now())
        .returning(WebhookEvent.id)
    )
    return list((await session.execute(stmt)).scalars())


async def stop_grant(session: AsyncSession, grant_id: str) -> int:
    """grant.deleted: events of the grant still waiting are not processed."""
    stmt = (
        update(WebhookEvent)
        .where(
            WebhookEvent.grant_id == grant_id,
            WebhookEvent.status.in_((EventStatus.RECEIVED, EventStatus.QUEUED, EventStatus.PARKED)),
            ~WebhookEvent.type.startswith("grant."),
        )
        .values(status=EventStatus.IGNORED, last_error="grant deleted", updated_at=func.now())
    )
    return (await session.execute(stmt)).rowcount  # type: ignore[attr-defined,no-any-return]


async def stuck(
    session: AsyncSession, *, older_than: datetime, limit: int, statuses: Sequence[str] = RUNNABLE
) -> list[int]:
    """Events still waiting to be processed, untouched since `older_than` (the sweeper checks their jobs)."""
    stmt = (
        select(WebhookEvent.id)
        .where(WebhookEvent.status.in_(statuses), WebhookEvent.updated_at < older_than)
        .order_by(WebhookEvent.updated_at)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def waiting_for(session: AsyncSession, *, grant_id: str | None, limit: int) -> list[int]:
    """Events not yet processed (of this grant), to queue again when an operator's pause ends."""
    stmt = select(WebhookEvent.id).where(WebhookEvent.status.in_(RUNNABLE))
    if grant_id is not None:
        stmt = stmt.where(WebhookEvent.grant_id == grant_id)
    return list((await session.execute(stmt.order_by(WebhookEvent.id).limit(limit))).scalars())


async def search(
    session: AsyncSession,
    *,
    status: str | None = None,
    type_prefix: str | None = None,
    grant_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    text: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[WebhookEvent]:
    """Newest first; `before_id` pages (keyset, so deep pages cost what the first does)."""
    conditions = []
    if status:
        conditions.append(WebhookEvent.status == status)
    if type_prefix:
        conditions.append(WebhookEvent.type.startswith(type_prefix, autoescape=True))
    if grant_id:
        conditions.append(WebhookEvent.grant_id == grant_id)
    if since:
        conditions.append(WebhookEvent.received_at >= since)
    if until:
        conditions.append(WebhookEvent.received_at < until)
    if text:
        conditions.append(
            (WebhookEvent.object_id == text) | (WebhookEvent.grant_id == text) | (WebhookEvent.notification_id == text)
        )
    if before_id:
        conditions.append(WebhookEvent.id < before_id)
    stmt = select(WebhookEvent).where(*conditions).order_by(WebhookEvent.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def purge(session: AsyncSession, event_ids: list[int]) -> int:
    """Operator's purge: the events stay, marked so that no sweep brings them back."""
    stmt = (
        update(WebhookEvent)
        .where(WebhookEvent.id.in_(event_ids), WebhookEvent.status.in_((*RUNNABLE, EventStatus.PARKED)))
        .values(status=EventStatus.PURGED, updated_at=func.now())
    )
    return (await session.execute(stmt)).rowcount  # type: ignore[attr-defined,no-any-return]


async def dead(session: AsyncSession, *, limit: int) -> list[WebhookEvent]:
    """Dead letters among events, newest first."""
    stmt = (
        select(WebhookEvent)
        .where(WebhookEvent.status == EventStatus.DEAD)
        .order_by(WebhookEvent.id.desc())
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def touch_swept(session: AsyncSession, event_ids: list[int]) -> None:
    """The sweeper queued these: restart their clock, and call them `queued` (their job is in Redis; a `processing`
    one's run is gone, so its new job must not take it for a live run's)."""
    await session.execute(
        update(WebhookEvent)
        .where(
            WebhookEvent.id.in_(event_ids),
            WebhookEvent.status.in_((EventStatus.RECEIVED, EventStatus.QUEUED, EventStatus.PROCESSING)),
        )
        .values(updated_at=func.now(), status=EventStatus.QUEUED)
    )


async def count_with_status(session: AsyncSession, status: str) -> int:
    stmt = select(func.count()).select_from(WebhookEvent).where(WebhookEvent.status == status)
    return int(await session.scalar(stmt) or 0)


async def statuses(session: AsyncSession, event_ids: Sequence[int]) -> dict[int, str]:
    """The status of each of these events (unknown ids are absent): why a replay by id did nothing."""
    stmt = select(WebhookEvent.id, WebhookEvent.status).where(WebhookEvent.id.in_(event_ids))
    return {row[0]: row[1] for row in await session.execute(stmt)}


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """An event claimed by a batch: what processing it needs, without the whole stored payload."""

    id: int
    type: str
    grant_id: str | None
    object_id: str | None
    notified_at: datetime
    received_at: datetime
    attempts: int
    object_json: str | None  # the notification's `data.object`, as JSON text (decoded only when used)
    trace_context: str | None  # the storing request's W3C traceparent (core/tracing.py)


# Claims what is waiting, and what a killed worker left `processing` for longer than a run may take (so a batch
# never takes an event another live run holds). One statement for the whole batch.
# Both claims: what they set and what they answer (a ClaimedEvent per row), and what a killed run leaves behind:
# an event `processing` past `stale_s`, the bound a live run cannot outlast.
_CLAIM_SET = "UPDATE webhook_events SET status = 'processing', attempts = attempts + 1, updated_at = now()"
_CLAIM_RETURNING = (
    "RETURNING id, type, grant_id, object_id, notified_at, received_at, attempts, (payload->'data'->'object')::text, "
    "trace_context"
)
_LEFT_BY_A_KILLED_RUN = "(status = 'processing' AND updated_at < now() - make_interval(secs => :stale_s))"
_CLAIM_MANY = text(
    f"""
    {_CLAIM_SET}
    WHERE id = ANY(CAST(:ids AS bigint[])) AND (status IN ('received', 'queued') OR {_LEFT_BY_A_KILLED_RUN})
    {_CLAIM_RETURNING}
    """
)


async def claim_many(session: AsyncSession, event_ids: Sequence[int], *, stale_after_s: float) -> list[ClaimedEvent]:
    """Claim these events for one batch run and count the attempt; events done or held by a live run are left out."""
    rows = await execute_core(session, _CLAIM_MANY, {"ids": list(event_ids), "stale_s": float(stale_after_s)})
    return [ClaimedEvent(*row) for row in rows]


_GIVE_BACK = text(
    """
    UPDATE webhook_events SET status = :status, attempts = greatest(attempts - 1, 0), updated_at = now()
    WHERE id = ANY(CAST(:ids AS bigint[])) AND status = 'processing'
    """
)


async def give_back(session: AsyncSession, event_ids: Sequence[int], *, to: EventStatus = EventStatus.QUEUED) -> None:
    """A claim that did not run (throttled, handed to another job, shutting down): not a spent try. `to`: back to
    `received` (for the batch workers' next claim) or `queued` (a job in Redis will take it up)."""
    await execute_core(session, _GIVE_BACK, {"ids": list(event_ids), "status": to})


_MARK_PROCESSED_MANY = text(
    """
    UPDATE webhook_events SET status = 'processed', last_error = NULL, processed_at = now(), updated_at = now(),
        payload = CASE WHEN payload->'data'->'object' ? 'body' THEN payload #- '{data,object,body}' ELSE payload END
    WHERE id = ANY(CAST(:ids AS bigint[]))
    """
)


async def mark_processed_many(session: AsyncSession, event_ids: Sequence[int]) -> None:
    await execute_core(session, _MARK_PROCESSED_MANY, {"ids": list(event_ids)})


# The batch worker's queue is this table: the oldest events no one has claimed, skipping rows another worker is
# claiming right now (so workers on many machines share the work without waiting for each other).
# Also what a killed worker left `processing` past `stale_s` (the bound arq keeps for a killed job: its timeout + 10
# s), so a crash costs that long, not the sweeper's interval.
_CLAIM_NEXT = text(
    f"""
    {_CLAIM_SET}
    WHERE id IN (
        SELECT id FROM webhook_events
        WHERE (status = 'received' OR {_LEFT_BY_A_KILLED_RUN})
          AND (grant_id IS NULL OR grant_id <> ALL(CAST(:paused_grants AS text[])))
        ORDER BY updated_at LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    {_CLAIM_RETURNING}
    """
)
# Sent in the transaction that stores events: delivered when it commits, once however many rows it stored.
WAITING_CHANNEL = "mailroom_events"
_NOTIFY = text(f"SELECT pg_notify('{WAITING_CHANNEL}', '')")


async def claim_next(
    session: AsyncSession, *, limit: int, stale_after_s: float, paused_grants: Sequence[str] = ()
) -> list[ClaimedEvent]:
    """Claim up to `limit` events waiting for the batch worker (status `received`, or held by a run that has been
    gone for `stale_after_s`), oldest first; the events of `paused_grants` (an operator's pause) wait."""
    params = {"limit": limit, "stale_s": float(stale_after_s), "paused_grants": list(paused_grants)}
    return [ClaimedEvent(*row) for row in await execute_core(session, _CLAIM_NEXT, params)]


async def notify_waiting(session: AsyncSession) -> None:
    """Wake the batch workers listening (at commit)."""
    await execute_core(session, _NOTIFY, {})


async def oldest_waiting(session: AsyncSession) -> datetime | None:
    """When the oldest event waiting for the batch workers' claim was stored (or given back)."""
    stmt = select(func.min(WebhookEvent.updated_at)).where(WebhookEvent.status == EventStatus.RECEIVED)
    return cast(datetime | None, await session.scalar(stmt))


async def waiting_ids(session: AsyncSession) -> list[int]:
    """Events waiting for the batch workers' claim (`mailroom purge` drops them with the queue)."""
    stmt = select(WebhookEvent.id).where(WebhookEvent.status == EventStatus.RECEIVED).order_by(WebhookEvent.id)
    return list((await session.execute(stmt)).scalars())


async def listen_waiting(
    database_url: str, on_notify: Callable[..., None], *, connect_timeout: float
) -> asyncpg.Connection:
    """A connection of its own that calls `on_notify` for each NOTIFY on WAITING_CHANNEL (a pooled connection would
    be handed to other work). The caller closes it."""
    url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(url, timeout=connect_timeout)
    try:
        await connection.add_listener(WAITING_CHANNEL, on_notify)
    except BaseException:
        await connection.close()
        raise
    return connection


async def grants_and_errors(session: AsyncSession, ids: Sequence[int]) -> dict[int, tuple[str | None, str | None]]:
    """Each row's grant and last error, for cancelling the jobs that stand for them by grant or error text."""
    if not ids:
        return {}
    stmt = select(WebhookEvent.id, WebhookEvent.grant_id, WebhookEvent.last_error).where(WebhookEvent.id.in_(ids))
    return {row[0]: (row[1], row[2]) for row in await session.execute(stmt)}
