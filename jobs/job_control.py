"""The jobs view and its cancel: every job a worker runs now, every job waiting (ready or scheduled) and the results
arq keeps of the last ones finished; a queued or deferred job cancelled one at a time or by filter.

A cancelled job's stored work is marked so that no sweep brings it back: a `process_event` job's event is marked
purged, a stage job's email dead ("cancelled by an operator"). `mailroom replay` (by id, or `--purged`) brings either
back. Every cancel is in the audit trail."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import orjson
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import audit, emails, webhook_events
from db.uow import read_session, unit_of_work
from jobs import arq_storage
from jobs.enqueue import PROCESS_EVENT, STAGE_JOBS, SYNC_GRANT
from jobs.heartbeat import finished_ids, live_workers

CANCELLED = "cancelled by an operator"
# The most waiting jobs one listing or one cancel by filter reads from Redis (the answer says when there were more).
READ_AT_MOST = 2000
VIEW_STATES = ("running", "ready", "scheduled", "finished")
WAITING_STATES = {"ready": (False,), "scheduled": (True,), "waiting": (False, True)}


class NotCancellable(Exception):
    """The job is not waiting (running, finished, or unknown): only a queued or deferred job can be cancelled."""


@dataclass(frozen=True)
class JobFilter:
    """Which waiting jobs a bulk cancel takes: `state` (ready, scheduled, waiting: both), and any of the job's
    function, the grant and the last error text of the event or email it stands for (a sync's grant is its
    argument), and when it was queued."""

    state: str = "waiting"
    function: str | None = None
    grant: str | None = None
    error: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def asked(self) -> dict[str, Any]:
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items() if v is not None}


async def browse(
    sessionmaker: async_sessionmaker[AsyncSession],
    queue: ArqRedis,
    queue_name: str,
    *,
    states: Sequence[str] = VIEW_STATES,
    chosen: JobFilter | None = None,
    offset: int = 0,
    limit: int = 50,
) -> dict[str, Any]:
    """Jobs in `states`, in that order: running (longest first), ready (oldest first), scheduled (soonest first),
    finished (newest first); those `chosen` matches (its state aside); a page of them."""
    rows: list[dict[str, Any]] = []
    truncated = False
    for state in VIEW_STATES:
        if state not in states:
            continue
        if state == "running":
            rows += await _running(queue, queue_name)
        elif state == "finished":
            rows += await _finished(queue, queue_name)
        else:
            found, more = await _waiting(queue, queue_name, scheduled=state == "scheduled")
            rows += found
            truncated |= more
    if chosen is not None:
        rows = await _matching(sessionmaker, rows, chosen)
    page = rows[offset : offset + limit]
    return {
        "jobs": page,
        "total": len(rows),
        "total_is_at_least": truncated,
        "offset": offset,
        "next_offset": offset + limit if offset + limit < len(rows) else None,
    }


async def _running(queue: ArqRedis, queue_name: str) -> list[dict[str, Any]]:
    now = time.time()
    running = [(worker["name"], job) for worker in await live_workers(queue, queue_name) for job in worker["jobs"]]
    stored = await arq_storage.read_jobs(queue, [job["job_id"] for _, job in running])
    rows = []
    for worker, job in sorted(running, key=lambda pair: pair[1]["started_at"]):
        known = stored.get(job["job_id"])
        rows.append(
            {
                "job_id": job["job_id"],
                "state": "in_progress",
                "function": known.function if known else None,
                "args": known.args if known else None,
                "tries": known.tries if known else None,
                "enqueued_ms": known.enqueued_ms if known else None,
                "worker": worker,
                "started_at": job["started_at"],
                "running_s": round(max(0.0, now - job["started_at"]), 3),
            }
        )
    return rows


async def _waiting(queue: ArqRedis, queue_name: str, *, scheduled: bool) -> tuple[list[dict[str, Any]], bool]:
    now_ms = int(time.time() * 1000)
    low, high = (now_ms + 1, "+inf") if scheduled else ("-inf", now_ms)
    jobs = await arq_storage.read_queued(queue, queue_name, low=low, high=high, limit=READ_AT_MOST + 1)
    more = len(jobs) > READ_AT_MOST
    jobs = jobs[:READ_AT_MOST]
    if not scheduled:  # a running job stays in arq's queue until it ends: it is running, not waiting
        busy = await arq_storage.running(queue, [job.job_id for job in jobs])
        jobs = [job for job in jobs if job.job_id not in busy]
    rows = [
        {
            "job_id": job.job_id,
            "state": "deferred" if scheduled else "queued",
            "function": job.function,
            "args": job.args,
            "tries": job.tries,
            "run_at": job.run_at_ms / 1000,
            "enqueued_ms": job.enqueued_ms,
        }
        for job in jobs
    ]
    return rows, more


async def _finished(queue: ArqRedis, queue_name: str) -> list[dict[str, Any]]:
    rows = []
    for job in await arq_storage.results(queue, await finished_ids(queue, queue_name)):
        took = (job.finished_ms - job.started_ms) / 1000 if job.finished_ms and job.started_ms else None
        rows.append(
            {
                "job_id": job.job_id,
                "state": "complete",
                "function": job.function,
                "args": job.args,
                "tries": job.tries,
                "enqueued_ms": job.enqueued_ms,
                "success": job.success,
                # What it returned, or the error it raised: short (the full result is at GET /jobs/{id}).
                "result": _short(job.result),
                "finished_at": job.finished_ms / 1000 if job.finished_ms else None,
                "took_s": round(took, 3) if took is not None else None,
            }
        )
    return rows


def _short(value: Any, limit: int = 200) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def cancel(
    sessionmaker: async_sessionmaker[AsyncSession], queue: ArqRedis, queue_name: str, job_id: str, *, who: str
) -> dict[str, Any]:
    state = (await arq_storage.status(queue, queue_name, job_id))["status"]
    if state not in ("queued", "deferred"):
        raise NotCancellable(f"job {job_id} is {state.replace('_', ' ')}: only a queued or deferred job is cancelled")
    await arq_storage.drop(queue, queue_name, [job_id])
    async with unit_of_work(sessionmaker) as session:
        marked = await _mark(session, [job_id])
        await audit.record(session, who=who, action="cancel", filter={"job_id": job_id}, rows=1 + marked)
    return {"job_id": job_id, "was": state, "marked": marked}


async def cancel_matching(
    sessionmaker: async_sessionmaker[AsyncSession],
    queue: ArqRedis,
    queue_name: str,
    *,
    chosen: JobFilter,
    who: str,
    dry_run: bool,
) -> dict[str, Any]:
    """Cancel every waiting job `chosen` matches, at most READ_AT_MOST at a time. A dry run counts them, by
    function, and changes nothing."""
    matched: list[dict[str, Any]] = []
    more = False
    for scheduled in WAITING_STATES[chosen.state]:
        found, truncated = await _waiting(queue, queue_name, scheduled=scheduled)
        matched += found
        more |= truncated
    matched = await _matching(sessionmaker, matched, chosen)
    answer: dict[str, Any] = {
        "matched": len(matched),
        "by_function": dict(Counter(str(job["function"]) for job in matched)),
        "more_waiting": more,
        "dry_run": dry_run,
    }
    if dry_run or not matched:
        return answer
    ids = [job["job_id"] for job in matched]
    await arq_storage.drop(queue, queue_name, ids)
    async with unit_of_work(sessionmaker) as session:
        answer["marked"] = await _mark(session, ids)
        await audit.record(session, who=who, action="cancel", filter=chosen.asked(), rows=len(ids))
    return answer


async def _matching(
    sessionmaker: async_sessionmaker[AsyncSession], jobs: list[dict[str, Any]], chosen: JobFilter
) -> list[dict[str, Any]]:
    since_ms = chosen.since.timestamp() * 1000 if chosen.since else None
    until_ms = chosen.until.timestamp() * 1000 if chosen.until else None
    jobs = [
        job
        for job in jobs
        if (not chosen.function or job["function"] == chosen.function)
        and (since_ms is None or (job["enqueued_ms"] or 0) >= since_ms)
        and (until_ms is None or (job["enqueued_ms"] or 0) <= until_ms)
    ]
    if not chosen.grant and not chosen.error:
        return jobs
    events, stage_emails = _stood_for([job["job_id"] for job in jobs])
    async with read_session(sessionmaker) as session:
        of_events = await webhook_events.grants_and_errors(session, list(events.values()))
        of_emails = await emails.grants_and_errors(session, list(stage_emails.values()))

    def grant_and_error(job: dict[str, Any]) -> tuple[str | None, str | None]:
        if job["job_id"] in events:
            return of_events.get(events[job["job_id"]], (None, None))
        if job["job_id"] in stage_emails:
            return of_emails.get(stage_emails[job["job_id"]], (None, None))
        if job["function"] == SYNC_GRANT and job["args"]:
            return str(job["args"][0]), None
        return None, None

    kept = []
    for job in jobs:
        grant, error = grant_and_error(job)
        if chosen.grant and grant != chosen.grant:
            continue
        if chosen.error and (error is None or chosen.error.lower() not in error.lower()):
            continue
        kept.append(job)
    return kept


def _stood_for(job_ids: Sequence[str]) -> tuple[dict[str, int], dict[str, int]]:
    """The events (process_event jobs) and the emails (stage jobs) these jobs stand for, by job id."""
    stages = set(STAGE_JOBS.values())
    events, stage_emails = {}, {}
    for job_id in job_ids:
        function, _, ident = job_id.partition(":")
        if function == PROCESS_EVENT and ident.isdigit():
            events[job_id] = int(ident)
        elif function in stages and ident.isdigit():
            stage_emails[job_id] = int(ident)
    return events, stage_emails


async def _mark(session: AsyncSession, job_ids: Sequence[str]) -> int:
    """Mark what cancelled jobs stood for, so that no sweep queues it again; how many rows were marked."""
    events, stage_emails = _stood_for(job_ids)
    marked = await webhook_events.purge(session, list(events.values())) if events else 0
    for email_id in stage_emails.values():
        await emails.stage_failed(session, email_id, error=CANCELLED, dead=True)
    return marked + len(stage_emails)
