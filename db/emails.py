"""Repository for ``emails``: upserts ordered by notification time, so late deliveries never win."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Executable, Table, bindparam, func, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Email
from db.states import PipelineState, Stage
from db.uow import execute_core

_EMAILS = cast(Table, Email.__table__)
# The columns a Nylas message maps onto (see jobs.message_columns.email_columns).
EMAIL_COLUMNS = (
    "thread_id",
    "subject",
    "from_",
    "from_email",
    "to",
    "cc",
    "bcc",
    "reply_to",
    "date",
    "snippet",
    "body",
    "folders",
    "unread",
    "starred",
    "raw",
)


@dataclass(frozen=True, slots=True)
class Stored:
    email_id: int
    inserted: bool  # the first state we have of this message
    written: bool  # False when a newer state was already stored
    pipeline_state: str
    waiting: bool  # dead or parked: a replay or its grant's return moves it on, not a new state


async def upsert(
    session: AsyncSession,
    *,
    grant_id: str,
    message_id: str,
    state_at: datetime,
    columns: dict[str, Any],
    received_at: datetime | None = None,
) -> Stored:
    """Store this state of the message unless a newer one is stored already."""
    unknown = set(columns) - set(EMAIL_COLUMNS)
    if unknown:
        raise ValueError(f"not email columns: {sorted(unknown)}")
    values = {**columns, "grant_id": grant_id, "message_id": message_id, "state_at": state_at}
    params = {f"v_{name}": value for name, value in values.items()} | {"v_first_received_at": received_at}
    row = (await execute_core(session, _upsert_statement(tuple(sorted(columns))), params)).one_or_none()
    if row is not None:
        return Stored(row[0], bool(row[1]), True, row[2], bool(row[3]))
    existing = await get(session, grant_id=grant_id, message_id=message_id)
    assert existing is not None  # the conflict that skipped the update is this row
    waiting = existing.dead_at is not None or existing.parked_at is not None
    return Stored(existing.id, False, False, existing.pipeline_state, waiting)


@functools.cache
def _upsert_statement(names: tuple[str, ...]) -> Executable:
    """Built once per set of columns (one set in practice), with bind parameters."""
    # Bind names differ from column names (SQLAlchemy reserves those for its own use).
    stmt = insert(_EMAILS).values(
        grant_id=bindparam("v_grant_id"),
        message_id=bindparam("v_message_id"),
        state_at=bindparam("v_state_at"),
        first_received_at=bindparam("v_first_received_at"),
        deleted_at=None,
        **{name: bindparam(f"v_{name}") for name in names},
    )
    excluded = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[_EMAILS.c.grant_id, _EMAILS.c.message_id],
        set_={
            **{name: excluded[name] for name in (*names, "deleted_at")},
            "state_at": excluded.state_at,
            "updated_at": func.now(),
        },
        where=_EMAILS.c.state_at <= excluded.state_at,
    ).returning(
        _EMAILS.c.id,
        literal_column("xmax = 0"),
        _EMAILS.c.pipeline_state,
        _EMAILS.c.dead_at.is_not(None) | _EMAILS.c.parked_at.is_not(None),
    )


async def mark_deleted(session: AsyncSession, *, grant_id: str, message_id: str, state_at: datetime) -> bool:
    """Record the deletion, as a tombstone if the message was never stored, so an older create cannot revive it."""
    stmt = insert(Email).values(
        grant_id=grant_id,
        message_id=message_id,
        state_at=state_at,
        deleted_at=state_at,
        pipeline_state=PipelineState.DELETED,
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=[Email.grant_id, Email.message_id],
        set_={
            "deleted_at": stmt.excluded.deleted_at,
            "state_at": stmt.excluded.state_at,
            "pipeline_state": PipelineState.DELETED,
            "pipeline_updated_at": func.now(),
            "updated_at": func.now(),
        },
        where=Email.state_at <= stmt.excluded.state_at,
    ).returning(Email.id)
    return (await session.execute(upsert)).scalar_one_or_none() is not None


async def get(session: AsyncSession, *, grant_id: str, message_id: str) -> Email | None:
    stmt = select(Email).where(Email.grant_id == grant_id, Email.message_id == message_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def mark_missing(session: AsyncSession, *, grant_id: str, message_id: str, state_at: datetime) -> int:
    """Nylas answered 404: the message is gone (or out of reach). Nothing more will be done with it."""
    stmt = insert(Email).values(
        grant_id=grant_id,
        message_id=message_id,
        state_at=state_at,
        missing_at=func.now(),
        pipeline_state=PipelineState.MISSING,
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=[Email.grant_id, Email.message_id],
        set_={"missing_at": func.now(), "pipeline_state": PipelineState.MISSING, "pipeline_updated_at": func.now()},
    ).returning(Email.id)
    return (await session.execute(upsert)).scalar_one()


async def claim_stage(session: AsyncSession, email_id: int, *, stage: Stage, force: bool = False) -> Email | None:
    """Start a try of `stage` and count it; None when the email is not waiting for that stage (a re-run is a no-op).

    `force` runs a stage again that has already succeeded (a replay asked for by an operator).
    """
    conditions = [Email.id == email_id, Email.dead_at.is_(None), Email.parked_at.is_(None)]
    values: dict[str, Any] = {"stage_attempts": Email.stage_attempts + 1, "pipeline_updated_at": func.now()}
    if force:
        conditions.append(Email.pipeline_state.in_((PipelineState.CLASSIFY, PipelineState.ACT, PipelineState.DONE)))
        values["pipeline_state"] = stage
    else:
        conditions.append(Email.pipeline_state == stage)
    stmt = update(Email).where(*conditions).values(**values).returning(Email)
    return (await session.execute(stmt, execution_options={"populate_existing": True})).scalar_one_or_none()


async def advance(session: AsyncSession, email_id: int, *, to: PipelineState, **columns: Any) -> None:
    """The stage succeeded: move to the next one with a fresh try budget."""
    params = {f"v_{name}": value for name, value in columns.items()} | {"email_id": email_id, "next_state": to}
    await execute_core(session, _advance_statement(tuple(sorted(columns))), params)


@functools.cache
def _advance_statement(names: tuple[str, ...]) -> Executable:
    return (
        update(_EMAILS)
        .where(_EMAILS.c.id == bindparam("email_id"))
        .values(
            pipeline_state=bindparam("next_state"),
            stage_attempts=0,
            last_error=None,
            pipeline_updated_at=func.now(),
            **{name: bindparam(f"v_{name}") for name in names},
        )
    )


async def stage_failed(session: AsyncSession, email_id: int, *, error: str, dead: bool) -> None:
    values: dict[str, Any] = {"last_error": error[:4000], "pipeline_updated_at": func.now()}
    if dead:
        values["dead_at"] = func.now()
    await session.execute(update(Email).where(Email.id == email_id).values(**values))


async def park(session: AsyncSession, email_id: int) -> None:
    await session.execute(update(Email).where(Email.id == email_id).values(parked_at=func.now()))


async def unpark_grant(session: AsyncSession, grant_id: str) -> list[tuple[int, str]]:
    stmt = (
        update(Email)
        .where(Email.grant_id == grant_id, Email.parked_at.is_not(None))
        .values(parked_at=None, stage_attempts=0, pipeline_updated_at=func.now())
        .returning(Email.id, Email.pipeline_state)
    )
    return [(row[0], row[1]) for row in await session.execute(stmt)]


async def stop_grant(session: AsyncSession, grant_id: str) -> int:
    """grant.deleted: nothing more is done for its emails; they stay, marked deleted."""
    stmt = (
        update(Email)
        .where(Email.grant_id == grant_id, Email.pipeline_state.in_((PipelineState.CLASSIFY, PipelineState.ACT)))
        .values(pipeline_state=PipelineState.DELETED, parked_at=None, pipeline_updated_at=func.now())
    )
    return (await session.execute(stmt)).rowcount  # type: ignore[attr-defined,no-any-return]


async def stuck(session: AsyncSession, *, older_than: datetime, limit: int) -> list[tuple[int, str]]:
    """Emails waiting for a stage, untouched since `older_than` (the sweeper checks their jobs)."""
    stmt = (
        select(Email.id, Email.pipeline_state)
        .where(
            Email.pipeline_state.in_((PipelineState.CLASSIFY, PipelineState.ACT)),
            Email.dead_at.is_(None),
            Email.parked_at.is_(None),
            Email.pipeline_updated_at < older_than,
        )
        .order_by(Email.pipeline_updated_at)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in await session.execute(stmt)]


async def waiting(
    session: AsyncSession, *, stage: str | None = None, grant_id: str | None = None, limit: int
) -> list[tuple[int, str]]:
    """Emails waiting for a stage (this one, of this grant), to queue again when an operator's pause ends."""
    stmt = select(Email.id, Email.pipeline_state).where(
        Email.pipeline_state.in_((stage,) if stage else (PipelineState.CLASSIFY, PipelineState.ACT)),
        Email.dead_at.is_(None),
        Email.parked_at.is_(None),
    )
    if grant_id is not None:
        stmt = stmt.where(Email.grant_id == grant_id)
    return [(row[0], row[1]) for row in await session.execute(stmt.order_by(Email.id).limit(limit))]


async def grant_of(session: AsyncSession, email_id: int) -> str | None:
    return await session.scalar(select(Email.grant_id).where(Email.id == email_id))


async def end_states(session: AsyncSession, messages: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Where each (grant, message)'s email is: its pipeline state, or `dead at <stage>` / `parked at <stage>`."""
    if not messages:
        return {}
    grant_ids = sorted({g for g, _ in messages})
    message_ids = sorted({m for _, m in messages})
    stmt = select(Email.grant_id, Email.message_id, Email.pipeline_state, Email.dead_at, Email.parked_at).where(
        Email.grant_id.in_(grant_ids), Email.message_id.in_(message_ids)
    )
    asked, found = set(messages), {}
    for grant_id, message_id, state, dead_at, parked_at in await session.execute(stmt):
        if (grant_id, message_id) in asked:
            found[(grant_id, message_id)] = (
                f"dead at {state}" if dead_at else f"parked at {state}" if parked_at else str(state)
            )
    return found


async def dead(session: AsyncSession, *, limit: int) -> list[Email]:
    """Dead letters among emails, most recently dead first."""
    stmt = select(Email).where(Email.dead_at.is_not(None)).order_by(Email.dead_at.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def touch(session: AsyncSession, email_ids: list[int]) -> None:
    """Restart the clock the sweeper reads."""
    await session.execute(update(Email).where(Email.id.in_(email_ids)).values(pipeline_updated_at=func.now()))


async def give_back_try(session: AsyncSession, email_id: int) -> None:
    """A try that only waited for throttle room does not count."""
    await session.execute(update(Email).where(Email.id == email_id).values(stage_attempts=Email.stage_attempts - 1))


async def recent(session: AsyncSession, *, limit: int, grant_id: str | None = None) -> tuple[int, list[Email]]:
    """The newest stored emails (and how many there are in all), for `mailroom inspect emails`."""
    conditions = [Email.grant_id == grant_id] if grant_id else []
    total = await session.scalar(select(func.count()).select_from(Email).where(*conditions))
    stmt = select(Email).where(*conditions).order_by(Email.id.desc()).limit(limit)
    return int(total or 0), list((await session.execute(stmt)).scalars())


async def raw_states(session: AsyncSession, grant_id: str, message_ids: list[str]) -> dict[str, Any]:
    """The stored Nylas object of each of these messages, by message id (missing ones are absent)."""
    stmt = select(Email.message_id, Email.raw).where(Email.grant_id == grant_id, Email.message_id.in_(message_ids))
    return {row[0]: row[1] for row in await session.execute(stmt)}


async def count_dead(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Email).where(Email.dead_at.is_not(None))) or 0)


async def pipeline_states(session: AsyncSession, email_ids: Sequence[int]) -> dict[int, str]:
    """Where each of these emails is in the chain (unknown ids are absent)."""
    stmt = select(Email.id, Email.pipeline_state).where(Email.id.in_(email_ids))
    return {row[0]: row[1] for row in await session.execute(stmt)}


@dataclass(frozen=True, slots=True)
class NewState:
    """One message's newest state for `store_many`, with what the batch made of it when it is new."""

    grant_id: str
    message_id: str
    state_at: datetime
    first_received_at: datetime | None
    columns: dict[str, Any]
    classification: str | None  # None: not classified here (the classify stage will)
    pipeline_state: str  # where a new email starts: classify, act or done


@dataclass(frozen=True, slots=True)
class StoredState:
    email_id: int
    grant_id: str
    message_id: str
    inserted: bool
    written: bool
    pipeline_state: str
    waiting: bool


_RECORD_COLUMNS = (
    "grant_id text, message_id text, state_at timestamptz, first_received_at timestamptz, thread_id text, "
    'subject text, from_ jsonb, from_email text, "to" jsonb, cc jsonb, bcc jsonb, reply_to jsonb, date timestamptz, '
    "snippet text, body text, folders text[], unread boolean, starred boolean, raw jsonb, classification text, "
    "pipeline_state text"
)
_CONTENT = EMAIL_COLUMNS
_QUOTED = {name: f'"{name}"' if name == "to" else name for name in _CONTENT}
# The batch worker's upsert: every message of a batch in one statement, read from one JSON array (cheaper to send
# than a bind parameter per column and row). A new email arrives classified, at the stage the batch reached; a
# known one gets the newer content and stays where its chain is. Same ordering rule as `upsert`.
_STORE_MANY = text(
    f"""
    INSERT INTO emails (grant_id, message_id, state_at, first_received_at, deleted_at,
                        {", ".join(_QUOTED.values())}, classification, classified_at, pipeline_state)
    SELECT r.grant_id, r.message_id, r.state_at, r.first_received_at, NULL,
           {", ".join("r." + q for q in _QUOTED.values())}, r.classification,
           CASE WHEN r.classification IS NULL THEN NULL ELSE now() END, r.pipeline_state
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r({_RECORD_COLUMNS})
    ON CONFLICT (grant_id, message_id) DO UPDATE SET
        {", ".join(f"{q} = excluded.{q}" for q in _QUOTED.values())},
        deleted_at = NULL, state_at = excluded.state_at, updated_at = now()
    WHERE emails.state_at <= excluded.state_at
    RETURNING id, grant_id, message_id, xmax = 0, pipeline_state, dead_at IS NOT NULL OR parked_at IS NOT NULL
    """
)
_KNOWN_STATES = text(
    """
    SELECT e.id, e.grant_id, e.message_id, e.pipeline_state, e.dead_at IS NOT NULL OR e.parked_at IS NOT NULL
    FROM emails e JOIN unnest(CAST(:g AS text[]), CAST(:m AS text[])) AS k(g, m)
         ON e.grant_id = k.g AND e.message_id = k.m
    """
)


def state_row(state: NewState) -> dict[str, Any]:
    """The JSON object `store_many` reads for one message (raises if a value cannot be sent as JSON)."""
    return {
        **state.columns,
        "grant_id": state.grant_id,
        "message_id": state.message_id,
        "state_at": state.state_at,
        "first_received_at": state.first_received_at,
        "classification": state.classification,
        "pipeline_state": state.pipeline_state,
    }


async def store_many(session: AsyncSession, rows_json: bytes, keys: Sequence[tuple[str, str]]) -> list[StoredState]:
    """Store each state unless a newer one is stored; `rows_json` is a JSON array of `state_row`s, one per message
    (at most one per message, sorted by key so that concurrent batches lock rows in one order)."""
    result = await execute_core(session, _STORE_MANY, {"rows": rows_json.decode()})
    stored = [StoredState(row[0], row[1], row[2], bool(row[3]), True, row[4], bool(row[5])) for row in result]
    written = {(s.grant_id, s.message_id) for s in stored}
    older = [key for key in keys if key not in written]
    if older:
        # A newer state was stored already: these were not written; their rows are read for the timeline.
        params = {"g": [g for g, _ in older], "m": [m for _, m in older]}
        for row in await execute_core(session, _KNOWN_STATES, params):
            stored.append(StoredState(row[0], row[1], row[2], False, False, row[3], bool(row[4])))
    return stored


async def grants_and_errors(session: AsyncSession, ids: Sequence[int]) -> dict[int, tuple[str | None, str | None]]:
    """Each row's grant and last error, for cancelling the jobs that stand for them by grant or error text."""
    if not ids:
        return {}
    stmt = select(Email.id, Email.grant_id, Email.last_error).where(Email.id.in_(ids))
    return {row[0]: (row[1], row[2]) for row in await session.execute(stmt)}
