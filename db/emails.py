"""Repository for ``emails``: upserts ordered by notification time, so late deliveries never win."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Email

# The columns a Nylas message maps onto (see jobs.messages.email_columns).
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


async def upsert(
    session: AsyncSession, *, grant_id: str, message_id: str, state_at: datetime, columns: dict[str, Any]
) -> bool:
    """Store this state of the message unless a newer one is stored already; True if it was written."""
    unknown = set(columns) - set(EMAIL_COLUMNS)
    if unknown:
        raise ValueError(f"not email columns: {sorted(unknown)}")
    values = {**columns, "deleted_at": None}
    stmt = insert(Email).values(grant_id=grant_id, message_id=message_id, state_at=state_at, **values)
    excluded = stmt.excluded
    upsert = stmt.on_conflict_do_update(
        index_elements=[Email.grant_id, Email.message_id],
        set_={
            **{name: excluded[name] for name in values},
            "state_at": excluded.state_at,
            "updated_at": func.now(),
        },
        where=Email.state_at <= excluded.state_at,
    ).returning(Email.id)
    return (await session.execute(upsert)).scalar_one_or_none() is not None


async def mark_deleted(session: AsyncSession, *, grant_id: str, message_id: str, state_at: datetime) -> bool:
    """Record the deletion, as a tombstone if the message was never stored, so an older create cannot revive it."""
    stmt = insert(Email).values(grant_id=grant_id, message_id=message_id, state_at=state_at, deleted_at=state_at)
    upsert = stmt.on_conflict_do_update(
        index_elements=[Email.grant_id, Email.message_id],
        set_={"deleted_at": stmt.excluded.deleted_at, "state_at": stmt.excluded.state_at, "updated_at": func.now()},
        where=Email.state_at <= stmt.excluded.state_at,
    ).returning(Email.id)
    return (await session.execute(upsert)).scalar_one_or_none() is not None


async def get(session: AsyncSession, *, grant_id: str, message_id: str) -> Email | None:
    stmt = select(Email).where(Email.grant_id == grant_id, Email.message_id == message_id)
    return (await session.execute(stmt)).scalar_one_or_none()
