"""The open work in PostgreSQL, counted without scanning what is finished: queue depth's database half."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db import emails
from db.models import Email, WebhookEvent

# Statuses worth counting on every poll; `processed` and `ignored` grow without end and are not queue depth.
OPEN_EVENT_STATUSES = ("received", "queued", "processing", "parked", "dead")


async def counts(session: AsyncSession) -> dict[str, Any]:
    events = dict(
        (
            await session.execute(
                select(WebhookEvent.status, func.count())
                .where(WebhookEvent.status.in_(OPEN_EVENT_STATUSES))
                .group_by(WebhookEvent.status)
            )
        ).all()
    )
    waiting = dict(
        (
            await session.execute(
                select(Email.pipeline_state, func.count())
                .where(
                    Email.pipeline_state.in_(("classify", "act")), Email.dead_at.is_(None), Email.parked_at.is_(None)
                )
                .group_by(Email.pipeline_state)
            )
        ).all()
    )
    dead_emails = await emails.count_dead(session)
    parked_emails = await session.scalar(select(func.count()).select_from(Email).where(Email.parked_at.is_not(None)))
    return {
        "events": {status: int(events.get(status, 0)) for status in OPEN_EVENT_STATUSES},
        "stages": {
            "process": int(events.get("received", 0) + events.get("queued", 0) + events.get("processing", 0)),
            "classify": int(waiting.get("classify", 0)),
            "act": int(waiting.get("act", 0)),
        },
        "dead": {"events": int(events.get("dead", 0)), "emails": int(dead_emails or 0)},
        "parked": {"events": int(events.get("parked", 0)), "emails": int(parked_emails or 0)},
    }
