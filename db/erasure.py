"""Removing mail content while keeping ids, states and counts: erasure requests, grant.deleted, message.deleted and
retention all come here.

What stays after an erasure: every row and its ids (grant, message, notification, thread), statuses, timestamps,
the classification label and the counts; notification ids in particular, so a late Nylas retry is still a duplicate.
What goes: subjects, bodies, snippets, participants, folders, the raw Nylas objects, the content of stored
notifications, and the parameters and results of actions (a draft's text, a forward's address).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, literal_column, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Action, Email, Grant, WebhookEvent
from db.states import EventStatus

# Every content column of `emails`; ids, states, dates and the classification label stay.
EMAIL_CONTENT = ("subject", "from_", "from_email", "to", "cc", "bcc", "reply_to", "snippet", "body", "folders", "raw")
# What a stored notification keeps of its object.
OBJECT_KEYS_KEPT = ("id", "grant_id", "object")
# Events still being worked on keep their payload (processing needs it); they are erased once they settle.
SETTLED_EVENTS = (EventStatus.PROCESSED, EventStatus.IGNORED, EventStatus.PURGED, EventStatus.DEAD, EventStatus.PARKED)


@dataclass(frozen=True)
class Erased:
    emails: int = 0
    events: int = 0
    actions: int = 0

    def __add__(self, other: Erased) -> Erased:
        return Erased(self.emails + other.emails, self.events + other.events, self.actions + other.actions)


_STRIPPED_OBJECT = text(
    "jsonb_set(payload, '{data,object}', coalesce((SELECT jsonb_object_agg(key, value) FROM "
    "jsonb_each(payload->'data'->'object') WHERE key IN ('id', 'grant_id', 'object')), '{}'::jsonb))"
)


async def _erase(
    session: AsyncSession,
    *,
    emails_where: ColumnElement[bool],
    events_where: ColumnElement[bool],
    dry_run: bool,
) -> Erased:
    # An action holds content in its parameters (a draft's text) or in what Nylas answered (the message it changed).
    actions_where = and_(
        Action.email_id.in_(select(Email.id).where(emails_where)),
        text("(actions.params != '{}'::jsonb OR (actions.result - 'id') != '{}'::jsonb)"),
    )
    if dry_run:
        counts = [
            await session.scalar(select(func.count()).select_from(table).where(*where))
            for table, where in (
                (Email, (emails_where, Email.erased_at.is_(None))),
                (WebhookEvent, (events_where, WebhookEvent.erased_at.is_(None))),
                (Action, (actions_where,)),
            )
        ]
        return Erased(*(int(count or 0) for count in counts))
    emails_done = await session.execute(
        update(Email)
        .where(emails_where, Email.erased_at.is_(None))
        .values({**dict.fromkeys(EMAIL_CONTENT), "erased_at": func.now(), "updated_at": func.now()})
    )
    events_done = await session.execute(
        update(WebhookEvent)
        .where(events_where, WebhookEvent.erased_at.is_(None))
        .values(payload=_STRIPPED_OBJECT, erased_at=func.now())
    )
    actions_done = await session.execute(
        update(Action)
        .where(actions_where)
        .values(
            params=literal_column("'{}'::jsonb"),
            result=text("CASE WHEN result IS NULL THEN NULL ELSE jsonb_build_object('id', result->'id') END"),
            error=None,
        )
    )
    return Erased(
        emails=emails_done.rowcount,  # type: ignore[attr-defined]
        events=events_done.rowcount,  # type: ignore[attr-defined]
        actions=actions_done.rowcount,  # type: ignore[attr-defined]
    )


async def erase_grant(session: AsyncSession, grant_id: str, *, dry_run: bool = False) -> Erased:
    """Every piece of the grant's content, in every table (grant.deleted, or an erasure request)."""
    erased = await _erase(
        session,
        emails_where=Email.grant_id == grant_id,
        events_where=and_(WebhookEvent.grant_id == grant_id, WebhookEvent.status.in_(SETTLED_EVENTS)),
        dry_run=dry_run,
    )
    if not dry_run:
        await session.execute(update(Grant).where(Grant.grant_id == grant_id).values(email=None))
    return erased


async def erase_message(session: AsyncSession, grant_id: str, message_id: str) -> Erased:
    """One message's content, wherever it is stored (message.deleted)."""
    return await _erase(
        session,
        emails_where=and_(Email.grant_id == grant_id, Email.message_id == message_id),
        events_where=and_(
            WebhookEvent.grant_id == grant_id,
            WebhookEvent.object_id == message_id,
            WebhookEvent.status.in_(SETTLED_EVENTS),
        ),
        dry_run=False,
    )


async def erase_older_than(session: AsyncSession, cutoff: datetime, *, limit: int) -> Erased:
    """Retention: content received before `cutoff`, at most `limit` rows of each kind per call. Emails still in the
    chain keep their content until they finish (or die)."""
    old_emails = select(Email.id).where(
        Email.created_at < cutoff,
        Email.erased_at.is_(None),
        Email.pipeline_state.not_in(("classify", "act")) | Email.dead_at.is_not(None),
    )
    old_events = select(WebhookEvent.id).where(
        WebhookEvent.received_at < cutoff,
        WebhookEvent.erased_at.is_(None),
        WebhookEvent.status.in_((EventStatus.PROCESSED, EventStatus.IGNORED, EventStatus.PURGED)),
    )
    return await _erase(
        session,
        emails_where=Email.id.in_(old_emails.order_by(Email.created_at).limit(limit)),
        events_where=WebhookEvent.id.in_(old_events.order_by(WebhookEvent.received_at).limit(limit)),
        dry_run=False,
    )
