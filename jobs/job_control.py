"""Cancel a queued or deferred job, and mark the stored work it stood for so that no sweep brings it back: a
`process_event` job's event is marked purged, a stage job's email dead ("cancelled by an operator"). `mailroom
replay` (by id, or `--purged`) brings either back. In the audit trail."""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import audit, emails, webhook_events
from db.uow import unit_of_work
from jobs import arq_storage
from jobs.enqueue import PROCESS_EVENT, STAGE_JOBS

CANCELLED = "cancelled by an operator"


class NotCancellable(Exception):
    """The job is not waiting (running, finished, or unknown): only a queued or deferred job can be cancelled."""


async def cancel(
    sessionmaker: async_sessionmaker[AsyncSession], queue: ArqRedis, queue_name: str, job_id: str, *, who: str
) -> dict[str, Any]:
    state = (await arq_storage.status(queue, queue_name, job_id))["status"]
    if state not in ("queued", "deferred"):
        raise NotCancellable(f"job {job_id} is {state.replace('_', ' ')}: only a queued or deferred job is cancelled")
    await arq_storage.drop(queue, queue_name, [job_id])
    function, _, ident = job_id.partition(":")
    stages = {name: stage for stage, name in STAGE_JOBS.items()}
    marked = 0
    async with unit_of_work(sessionmaker) as session:
        if function == PROCESS_EVENT and ident.isdigit():
            marked = await webhook_events.purge(session, [int(ident)])
        elif function in stages and ident.isdigit():
            await emails.stage_failed(session, int(ident), error=CANCELLED, dead=True)
            marked = 1
        await audit.record(session, who=who, action="cancel", filter={"job_id": job_id}, rows=1 + marked)
    return {"job_id": job_id, "was": state, "marked": marked}
