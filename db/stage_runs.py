"""Repository for ``stage_runs``: every try of every stage, the timeline an operator reads."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import BigInteger, Table, bindparam, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import StageRun
from db.states import Stage, StageRunStatus
from db.uow import execute_core

_RUNS = cast(Table, StageRun.__table__)
_START = (
    insert(_RUNS)
    .values(
        stage=bindparam("v_stage"),
        attempt=bindparam("v_attempt"),
        event_id=bindparam("v_event_id"),
        email_id=bindparam("v_email_id"),
        grant_id=bindparam("v_grant_id"),
        job_id=bindparam("v_job_id"),
        status=StageRunStatus.RUNNING,
    )
    .returning(_RUNS.c.id)
)
# email_id and detail are kept when not given (None).
_FINISH = (
    update(_RUNS)
    .where(_RUNS.c.id == bindparam("run_id"))
    .values(
        status=bindparam("v_status"),
        finished_at=func.now(),
        error=bindparam("v_error"),
        traceback=bindparam("v_traceback"),
        email_id=func.coalesce(bindparam("v_email_id", type_=BigInteger), _RUNS.c.email_id),
        detail=func.coalesce(bindparam("v_detail", type_=JSONB), _RUNS.c.detail),
    )
)


async def start(
    session: AsyncSession,
    *,
    stage: Stage,
    attempt: int,
    event_id: int | None = None,
    email_id: int | None = None,
    grant_id: str | None = None,
    job_id: str | None = None,
) -> int:
    params = {
        "v_stage": stage,
        "v_attempt": attempt,
        "v_event_id": event_id,
        "v_email_id": email_id,
        "v_grant_id": grant_id,
        "v_job_id": job_id,
    }
    return int((await execute_core(session, _START, params)).scalar_one())


async def finish(
    session: AsyncSession,
    run_id: int,
    *,
    status: StageRunStatus,
    email_id: int | None = None,
    error: str | None = None,
    traceback: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    params = {
        "run_id": run_id,
        "v_status": status,
        "v_error": error,
        "v_traceback": traceback,
        "v_email_id": email_id,
        "v_detail": detail,
    }
    await execute_core(session, _FINISH, params)


async def timeline(session: AsyncSession, *, email_id: int | None, event_id: int | None) -> list[StageRun]:
    """Every run for the email and for the event that brought it, oldest first."""
    conditions = []
    if email_id is not None:
        conditions.append(StageRun.email_id == email_id)
    if event_id is not None:
        conditions.append(StageRun.event_id == event_id)
    if not conditions:
        return []
    stmt = select(StageRun).where(or_(*conditions)).order_by(StageRun.started_at, StageRun.id)
    return list((await session.execute(stmt)).scalars())


# Finished runs, many at once: the batch worker records a batch's runs when it commits the batch's results.
_RECORD_MANY = text(
    """
    INSERT INTO stage_runs (stage, attempt, event_id, email_id, grant_id, job_id, status, error, detail,
                            started_at, finished_at)
    SELECT stage, attempt, event_id, email_id, grant_id, job_id, status, error, detail, started_at, now()
    FROM jsonb_to_recordset(CAST(:runs AS jsonb)) AS r(stage text, attempt integer, event_id bigint, email_id bigint,
         grant_id text, job_id text, status text, error text, detail jsonb, started_at timestamptz)
    """
)


async def record_many(session: AsyncSession, runs_json: bytes) -> None:
    """`runs_json`: a JSON array of finished runs (stage, attempt, event_id, email_id, grant_id, job_id, status,
    error, detail, started_at)."""
    await execute_core(session, _RECORD_MANY, {"runs": runs_json.decode()})
