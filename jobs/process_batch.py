"""A batch of stored notifications becomes stored, classified emails (claimed by jobs/pump.py, or by the
`process_events` job that takes up events a grant's rate made wait).

The per-event job (`jobs/process_event.py`) costs about twenty statements, seven transactions and an arq job per
stage for each email. A batch costs: one transaction that claims the events and knows their grants, one Redis call
for the grants' rate limits, the fetches (concurrent, one per message however many notifications of it the batch
holds), and one transaction that upserts every email, marks every event processed and records every stage run.
Classify runs in the batch (it is a function of the message); an email whose class has actions goes on to the act
stage (inline, else its own job), which keeps its at-most-once rules.

What a batch does not handle is handed, unchanged, to the per-event job and its rules: deletions and grant
notifications, grants paused, deleted or not yet seen. Each email's failure is its own: the one failure policy
(`jobs/failures.py`) records it on its event, and a retry is that event's own `process_event` job.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from arq import Retry
from sqlalchemy.ext.asyncio import AsyncSession

from core import tracing
from db import emails, grants, stage_runs, webhook_events
from db.emails import NewState, StoredState
from db.errors import DatabaseError
from db.states import EventStatus, Stage
from db.uow import unit_of_work
from db.webhook_events import ClaimedEvent
from jobs.chain import carry_on
from jobs.classifier import EmailView
from jobs.context import JobContext
from jobs.enqueue import ProcessEventEnqueuer, requeue_event
from jobs.errors import TransientError
from jobs.grant_calls import note_rate_limit
from jobs.message_columns import email_columns, is_complete
from jobs.process_event import record_failure
from jobs.triggers import Kind, parse_trigger

log = structlog.get_logger(__name__)
Key = tuple[str, str]  # (grant id, message id)


@dataclass
class _Message:
    """The notifications of one message in the batch, newest last, and what became of it."""

    events: list[ClaimedEvent]
    fetch: bool
    message: dict[str, Any] | None = None
    error: Exception | None = None
    state: NewState | None = None
    row: bytes = b""
    rule: str | None = None
    classify_s: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def newest(self) -> ClaimedEvent:
        return self.events[-1]


async def process_events(ctx: dict[str, Any], event_ids: list[int]) -> dict[str, int]:
    """Job: these events as one batch (the batch worker queues one when a grant's rate made events wait)."""
    jc = JobContext.from_ctx(ctx)
    try:
        batch = await claim(
            jc, lambda session: webhook_events.claim_many(session, event_ids, stale_after_s=jc.settings.job_timeout)
        )
    except DatabaseError as exc:
        # Nothing was claimed: run again a little later (the events wait where they are).
        raise Retry(defer=min(5.0, jc.settings.retry_base_delay) or 1.0) from exc
    # Stopped midway, arq runs this job again: what it had not finished waits for it as `queued`.
    return await run_claimed(ctx, *batch, job_id=ctx.get("job_id"), give_back_to=EventStatus.QUEUED)


Claim = Callable[[AsyncSession], Awaitable[list[ClaimedEvent]]]


async def claim(jc: JobContext, take: Claim) -> tuple[list[ClaimedEvent], dict[str, grants.GrantState]]:
    """One transaction: claim the events (`take`) and know their grants. Raises DatabaseError, having claimed none."""
    async with unit_of_work(jc.sessionmaker) as session:
        claimed = await take(session)
        grant_ids = [e.grant_id for e in claimed if e.grant_id]
        states = await grants.ensure_many(session, grant_ids) if grant_ids else {}
    return claimed, states


async def run_claimed(
    ctx: dict[str, Any],
    claimed: list[ClaimedEvent],
    states: dict[str, grants.GrantState],
    *,
    job_id: str | None,
    give_back_to: EventStatus,
) -> dict[str, int]:
    """Process a claimed batch. Returns counts: claimed, stored, handed on (to per-event jobs), deferred
    (throttled), failed. Cancelled (SIGTERM past the grace, a timeout), it gives back what it had not finished."""
    if not claimed:
        return {"claimed": 0}
    jc = JobContext.from_ctx(ctx)
    began_at = datetime.now(UTC)
    started = time.monotonic()
    unfinished = {e.id for e in claimed}
    try:
        return await _run(ctx, claimed, states, unfinished, job_id=job_id, began_at=began_at, started=started)
    except asyncio.CancelledError:
        if unfinished:
            with contextlib.suppress(Exception):
                await asyncio.shield(_give_back(jc, sorted(unfinished), to=give_back_to))
        raise


async def _run(
    ctx: dict[str, Any],
    claimed: list[ClaimedEvent],
    states: dict[str, grants.GrantState],
    unfinished: set[int],
    *,
    job_id: str | None,
    began_at: datetime,
    started: float,
) -> dict[str, int]:
    jc = JobContext.from_ctx(ctx)
    messages, solo = _by_message(claimed, states)
    counts = {"claimed": len(claimed), "stored": 0, "handed_on": len(solo), "deferred": 0, "failed": 0}
    if solo:
        await _hand_on(jc, solo)
        unfinished.difference_update(e.id for e in solo)
    deferred = await _throttle(jc, messages)
    counts["deferred"] = len(deferred)
    unfinished.difference_update(e.id for e in deferred)
    await _fetch(jc, messages, began_at=began_at)

    ready = [(key, m) for key, m in sorted(messages.items()) if m.error is None and _prepare(jc, key, m)]
    # The batch's writes serve every notification in it: one span, linked to each one's trace.
    with tracing.linked_span(
        "mailroom.store_batch", [e.trace_context for _, m in ready for e in m.events], {"mailroom.emails": len(ready)}
    ):
        stored = await _store(jc, ready, job_id=job_id, began_at=began_at)
    counts["stored"] = sum(len(messages[key].events) for key in stored)
    unfinished.difference_update(e.id for key in stored for e in messages[key].events)
    _observe(jc, [messages[key] for key in stored], stored, started=started)

    for message in messages.values():
        if message.error is not None:
            counts["failed"] += len(message.events)
            for event in message.events:
                await _fail(jc, event, message.error, job_id=job_id)
                unfinished.discard(event.id)
    await _carry_on(
        ctx, [(state, messages[key].events[0].trace_context) for key, state in stored.items()], started=started
    )
    if counts["failed"] or counts["deferred"] or counts["handed_on"]:
        log.info("batch.processed", **counts)
    return counts


def _by_message(
    claimed: list[ClaimedEvent], states: dict[str, grants.GrantState]
) -> tuple[dict[Key, _Message], list[ClaimedEvent]]:
    """The batch's notifications grouped by message, oldest first; and those left to per-event jobs."""
    messages: dict[Key, _Message] = {}
    solo: list[ClaimedEvent] = []
    for event in sorted(claimed, key=lambda e: (e.notified_at, e.id)):
        trigger = parse_trigger(event.type)
        state = states.get(event.grant_id or "")
        if trigger is None or trigger.kind is not Kind.MESSAGE or state is None or not state.may_call_nylas:
            solo.append(event)
            continue
        assert event.grant_id is not None and event.object_id is not None  # the API stores message events so
        key = (event.grant_id, event.object_id)
        carried = None if trigger.truncated else _object(event)
        needs_fetch = carried is None or not is_complete(carried)
        found = messages.get(key)
        if found is None:
            messages[key] = _Message([event], needs_fetch, carried)
        else:
            found.events.append(event)
            found.fetch = found.fetch or needs_fetch
            found.message = carried  # the newest so far (oldest first); a fetch replaces it
    return messages, solo


async def _throttle(jc: JobContext, messages: dict[Key, _Message]) -> list[ClaimedEvent]:
    """Take the grants' rate for every fetch in one round trip; what finds no room waits (and is returned)."""
    wanted: dict[str, int] = defaultdict(int)
    for (grant_id, _), message in messages.items():
        if message.fetch:
            wanted[grant_id] += 1
    room = await jc.throttle.acquire_many(wanted, (await jc.pauses.current()).rates)
    deferred: list[ClaimedEvent] = []
    wait = 0.0
    for key, message in list(messages.items()):
        if not message.fetch:
            continue
        granted, grant_wait = room[key[0]]
        if granted > 0:
            room[key[0]] = (granted - 1, grant_wait)
        else:
            deferred += messages.pop(key).events
            wait = max(wait, grant_wait)
    if deferred:
        # That grant's room is used up: its emails wait, the other grants' do not.
        await _defer(jc, deferred, wait)
    return deferred


async def _fetch(jc: JobContext, messages: dict[Key, _Message], *, began_at: datetime) -> None:
    """Every message the batch needs from Nylas, at once (the fetcher bounds how many are in flight)."""
    fetching = [(key, message) for key, message in messages.items() if message.fetch]

    async def fetched(key: Key, message: _Message) -> dict[str, Any]:
        if not tracing.on():
            return await jc.fetcher.find_message(*key)
        # The notification's own span in the worker, in its trace: how long it waited, and its fetch from Nylas.
        first = message.events[0]
        attributes = {
            "mailroom.event_ids": [e.id for e in message.events],
            "mailroom.queue_wait_s": (began_at - first.received_at).total_seconds(),
        }
        with tracing.span("mailroom.process_event", parent=first.trace_context, attributes=attributes):
            return await jc.fetcher.find_message(*key)

    results = await asyncio.gather(*(fetched(key, message) for key, message in fetching), return_exceptions=True)
    saved = 0
    for ((grant_id, _), message), result in zip(fetching, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            message.error = result
            if isinstance(result, TransientError):
                await note_rate_limit(jc, grant_id, result)
        else:
            message.message = result
            saved += len(message.events) - 1
    if saved:
        jc.metrics.inc("mailroom_nylas_fetches_saved", saved)


def _object(event: ClaimedEvent) -> dict[str, Any]:
    loaded = orjson.loads(event.object_json) if event.object_json else None
    return loaded if isinstance(loaded, dict) else {}


def _prepare(jc: JobContext, key: Key, message: _Message) -> bool:
    """The email's columns, its class and the stage it reaches here; False (with `error` set) if it cannot be."""
    newest = message.newest
    try:
        # Fetched: Nylas's current state. Not fetched: every notification carried the whole message; the newest's.
        assert message.message is not None
        columns = email_columns(message.message)
        classify_began = time.monotonic()
        classification, message.rule, pipeline = _classify(jc, columns)
        message.classify_s = time.monotonic() - classify_began
        message.state = NewState(
            grant_id=key[0],
            message_id=key[1],
            state_at=newest.notified_at,
            first_received_at=min(e.received_at for e in message.events),
            columns=columns,
            classification=classification,
            pipeline_state=pipeline,
        )
        message.row = orjson.dumps(emails.state_row(message.state))
    except Exception as exc:
        # This email's data cannot be stored as it is: it fails alone, the batch goes on.
        message.error = exc
        return False
    message.detail = {"fetched": message.fetch}
    if len(message.events) > 1:
        message.detail["coalesced"] = len(message.events)
    return True


def _classify(jc: JobContext, columns: dict[str, Any]) -> tuple[str | None, str | None, str]:
    """The class and where a new email goes next: done when its class has no actions, else act. A classifier that
    raises leaves it to the classify stage's own job, with that stage's tries and dead letter."""
    try:
        view = EmailView.from_message({**(columns["raw"] or {}), "body": columns["body"]}, folders=columns["folders"])
        result = jc.classifier.classify(view)
    except Exception:
        return None, None, "classify"
    return result.label, result.rule, ("act" if jc.rules.actions.get(result.label) else "done")


async def _store(
    jc: JobContext, ready: list[tuple[Key, _Message]], *, job_id: str | None, began_at: datetime
) -> dict[Key, StoredState]:
    """One transaction for the lot; if the server refuses something in it, each email alone (the bad one fails)."""
    if not ready:
        return {}
    try:
        return await _write(jc, ready, job_id=job_id, began_at=began_at)
    except DatabaseError as exc:
        if not exc.refused or len(ready) == 1:
            # Each of these fails as its own run would: the policy retries them (or, refused, dead-letters them).
            for _, message in ready:
                message.error = exc
            return {}
    stored: dict[Key, StoredState] = {}
    for one in ready:
        stored |= await _store(jc, [one], job_id=job_id, began_at=began_at)
    return stored


async def _write(
    jc: JobContext, ready: list[tuple[Key, _Message]], *, job_id: str | None, began_at: datetime
) -> dict[Key, StoredState]:
    rows = b"[" + b",".join(m.row for _, m in ready) + b"]"
    async with unit_of_work(jc.sessionmaker) as session:
        found = await emails.store_many(session, rows, [key for key, _ in ready])
        stored = {(s.grant_id, s.message_id): s for s in found}
        await webhook_events.mark_processed_many(session, [e.id for _, m in ready for e in m.events])
        runs: list[dict[str, Any]] = []
        for key, message in ready:
            _runs(runs, message, stored[key], job_id=job_id, began_at=began_at)
        await stage_runs.record_many(session, orjson.dumps(runs))
    return stored


def _runs(
    runs: list[dict[str, Any]],
    message: _Message,
    stored: StoredState,
    *,
    job_id: str | None,
    began_at: datetime,
) -> None:
    """The timeline rows: a process run per notification, and the classify and act runs a new email went through."""
    detail = {**message.detail, "inserted": stored.inserted, "written": stored.written}
    for event in message.events:
        runs.append(
            {
                "stage": "process",
                "attempt": event.attempts,
                "event_id": event.id,
                "email_id": stored.email_id,
                "grant_id": event.grant_id,
                "job_id": job_id,
                "status": "succeeded",
                "detail": detail,
                "started_at": began_at,
            }
        )
    state = message.state
    if not stored.inserted or state is None or state.classification is None:
        return
    common = {"attempt": 1, "email_id": stored.email_id, "grant_id": state.grant_id, "job_id": job_id}
    runs.append(
        {
            **common,
            "stage": "classify",
            "status": "succeeded",
            "detail": {"class": state.classification, "rule": message.rule},
            "started_at": began_at,
        }
    )
    if state.pipeline_state == "done":
        runs.append(
            {
                **common,
                "stage": "act",
                "status": "succeeded",
                "detail": {"actions": 0, "carried_out": 0},
                "started_at": began_at,
            }
        )


def _observe(jc: JobContext, done: list[_Message], stored: dict[Key, StoredState], *, started: float) -> None:
    """The same series the per-event jobs record: a process run takes the batch's time so far."""
    now = datetime.now(UTC)
    elapsed = time.monotonic() - started
    for message in done:
        for event in message.events:
            jc.metrics.inc("mailroom_jobs", stage="process", outcome="succeeded")
            jc.metrics.observe("mailroom_stage_duration_seconds", elapsed, stage="process")
            jc.metrics.observe("mailroom_webhook_to_stored_seconds", (now - event.received_at).total_seconds())
        state = message.state
        assert state is not None
        if not stored[(state.grant_id, state.message_id)].inserted or state.classification is None:
            continue
        jc.metrics.inc("mailroom_jobs", stage="classify", outcome="succeeded")
        jc.metrics.observe("mailroom_stage_duration_seconds", message.classify_s, stage="classify")
        if state.pipeline_state == "done":
            jc.metrics.inc("mailroom_jobs", stage="act", outcome="succeeded")
            jc.metrics.observe("mailroom_stage_duration_seconds", 0.0, stage="act")
            first = state.first_received_at or now
            jc.metrics.observe("mailroom_webhook_to_acted_seconds", (now - first).total_seconds())


async def _carry_on(ctx: dict[str, Any], stored: Iterable[tuple[StoredState, str | None]], *, started: float) -> None:
    """Emails that wait for a stage the batch did not run (act, for a class with actions): run here, together,
    while the job has time, else queued as their own jobs (jobs/chain.py). Each in its notification's trace."""

    async def carried(state: StoredState, traceparent: str | None) -> None:
        with tracing.span("mailroom.carry_on", parent=traceparent, attributes={"mailroom.email_id": state.email_id}):
            await carry_on(ctx, state.pipeline_state, state.email_id, started=started)

    waiting = [(s, t) for s, t in stored if not s.waiting and s.pipeline_state in ("classify", "act")]
    await asyncio.gather(*(carried(state, traceparent) for state, traceparent in waiting))


async def _fail(jc: JobContext, event: ClaimedEvent, exc: Exception, *, job_id: str | None) -> None:
    """The per-event policy, exactly as the event's own job applies it; a retry becomes that job, deferred."""
    try:
        async with unit_of_work(jc.sessionmaker) as session:
            run_id = await stage_runs.start(
                session,
                stage=Stage.PROCESS,
                attempt=event.attempts,
                event_id=event.id,
                grant_id=event.grant_id,
                job_id=job_id,
            )
        await record_failure(jc, event, run_id, exc, log.bind(event_id=event.id, grant_id=event.grant_id))
    except Retry as retry:
        delay = (retry.defer_score or 0) / 1000
        await requeue_event(jc.queue, event.id, defer_s=delay)


async def _hand_on(jc: JobContext, events: list[ClaimedEvent]) -> None:
    """Events the batch does not process: their claim goes back, and each gets its own `process_event` job."""
    await _give_back(jc, [e.id for e in events])
    for event in events:
        await requeue_event(jc.queue, event.id)


async def _defer(jc: JobContext, events: list[ClaimedEvent], wait: float) -> None:
    """Throttled: back to waiting, in one batch job due when the grant has room (spread a little)."""
    await _give_back(jc, [e.id for e in events])
    defer_ms = int((wait + random.uniform(0, max(0.05, wait / 2))) * 1000)
    await ProcessEventEnqueuer(jc.queue).enqueue(sorted(e.id for e in events), batch=True, defer_ms=defer_ms)


async def _give_back(jc: JobContext, event_ids: list[int], *, to: EventStatus = EventStatus.QUEUED) -> None:
    async with unit_of_work(jc.sessionmaker) as session:
        await webhook_events.give_back(session, event_ids, to=to)
