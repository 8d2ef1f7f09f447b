"""Nylas's side of the pipe, watched: the destinations' health, and a backfill of what Nylas skipped.

Nylas marks a destination `failing` after 15 minutes of delivery errors and `failed` after 72 hours; then it stops
sending and does not resend what it skipped. Nothing on our side would notice: no webhook arrives to say so. Every
MAILROOM_NYLAS_WEBHOOK_CHECK_SECONDS a cron lists the application's destinations and records their status
(/metrics, /readyz, the dashboard and `mailroom stats` show one that is not active). Then:

- when a destination that was `failing`/`failed`/`pause` is `active` again, every syncable grant is synced from the
  start of the outage (15 minutes before we first saw it unhealthy, when Nylas's errors began, minus the sync overlap):
  what Nylas skipped is fetched at once rather than by the next periodic sync;
- while one stays unhealthy, the same backfill runs every MAILROOM_NYLAS_WEBHOOK_BACKFILL_AFTER_SECONDS, each from
  where the last one reached, so mail keeps arriving however long the outage lasts.

The outage's start stands in for each grant's last notification: finding that would need an index on webhook_events
by grant and time, paid on every insert and status update of the hot path; the outage's start covers at least what
was skipped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from db import grants, webhook_destinations
from db.states import DestinationStatus
from db.uow import read_session, unit_of_work
from db.webhook_destinations import Seen
from jobs.context import JobContext
from jobs.enqueue import enqueue_sync_grant

log = structlog.get_logger(__name__)
# How long Nylas's delivery errors last before it marks a destination `failing` (its documentation).
NYLAS_FAILING_AFTER = timedelta(minutes=15)


def _seen(webhook: dict[str, Any]) -> Seen | None:
    try:
        status = DestinationStatus(str(webhook.get("status")))
    except ValueError:
        log.warning("webhooks.unknown_status", destination=webhook.get("id"), status=webhook.get("status"))
        return None
    updated = webhook.get("status_updated_at")
    return Seen(
        id=str(webhook["id"]),
        url=str(webhook.get("webhook_url") or ""),
        status=status,
        status_updated_at=datetime.fromtimestamp(int(updated), tz=UTC) if updated else None,
    )


async def check_destinations(jc: JobContext, tick: str) -> dict[str, Any]:
    """Cron body: list the destinations, record their status, backfill after (and during) an outage."""
    if not jc.settings.nylas_api_key.get_secret_value():
        return {"skipped": "no MAILROOM_NYLAS_API_KEY"}
    listed = [seen for webhook in await jc.nylas.list_webhooks() if (seen := _seen(webhook)) is not None]
    now = datetime.now(UTC)
    async with unit_of_work(jc.sessionmaker) as session:
        before = await webhook_destinations.record(session, listed, now=now)
    overlap = timedelta(seconds=jc.settings.sync_overlap_seconds)
    every = timedelta(seconds=jc.settings.nylas_webhook_backfill_after_seconds)
    backfills: list[tuple[str, datetime, str]] = []  # (destination, from, why)
    for seen in listed:
        earlier = before.get(seen.id)
        if earlier is None or earlier.unhealthy_since is None:
            if seen.status is not DestinationStatus.ACTIVE:
                log.warning("webhooks.destination_unhealthy", destination=seen.id, status=seen.status, url=seen.url)
            continue
        outage_start = earlier.unhealthy_since - NYLAS_FAILING_AFTER
        reached = earlier.backfilled_to or outage_start
        if seen.status is DestinationStatus.ACTIVE:
            log.info(
                "webhooks.destination_recovered", destination=seen.id, down_since=earlier.unhealthy_since.isoformat()
            )
            backfills.append((seen.id, reached - overlap, "recovered"))
        elif now - reached >= every:
            backfills.append((seen.id, reached - overlap, "still unhealthy"))
    grant_ids: list[str] = []
    if backfills:
        async with read_session(jc.sessionmaker) as session:
            grant_ids = await grants.syncable(session)
        since = min(start for _, start, _ in backfills)
        for grant_id in grant_ids:
            await enqueue_sync_grant(jc.queue, grant_id, since=since.timestamp(), tick=f"backfill-{tick}")
        async with unit_of_work(jc.sessionmaker) as session:
            for destination, _, why in backfills:
                if why != "recovered":
                    await webhook_destinations.set_backfilled_to(session, destination, now)
        for destination, start, why in backfills:
            log.warning(
                "webhooks.backfill", destination=destination, why=why, since=start.isoformat(), grants=len(grant_ids)
            )
    statuses = [seen.status.value for seen in listed]
    return {
        "destinations": len(listed),
        "unhealthy": sum(status != DestinationStatus.ACTIVE for status in statuses),
        "backfilled_grants": len(grant_ids),
    }
