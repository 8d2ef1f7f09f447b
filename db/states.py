"""The states a row can be in, by name: the code compares and writes these, and the tables' CHECK constraints are
built from them (db/models.py), so the two cannot drift. StrEnums, so a value is also its text in JSON and logs."""

from __future__ import annotations

from enum import StrEnum


class EventStatus(StrEnum):
    """A notification's way through: received -> (queued) -> processing -> processed, or parked/dead/purged;
    `ignored` for types mailroom does not process."""

    RECEIVED = "received"
    QUEUED = "queued"
    PROCESSING = "processing"
    PROCESSED = "processed"
    IGNORED = "ignored"
    PARKED = "parked"
    DEAD = "dead"
    PURGED = "purged"


class GrantStatus(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    DELETED = "deleted"


class DestinationStatus(StrEnum):
    """A webhook destination's status at Nylas: `failing` after 15 minutes of errors, `failed` after 72 hours (Nylas
    then stops sending and does not resend what it skipped), `pause` when someone paused it."""

    ACTIVE = "active"
    FAILING = "failing"
    FAILED = "failed"
    PAUSE = "pause"


class PipelineState(StrEnum):
    """Where an email is in the chain process -> classify -> act: the next stage to run, or how it ended."""

    CLASSIFY = "classify"
    ACT = "act"
    DONE = "done"
    MISSING = "missing"
    DELETED = "deleted"


class Stage(StrEnum):
    PROCESS = "process"
    CLASSIFY = "classify"
    ACT = "act"


class StageRunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    PARKED = "parked"
    DEAD = "dead"
    SKIPPED = "skipped"


class ActionStatus(StrEnum):
    PLANNED = "planned"
    EXECUTING = "executing"
    DONE = "done"
    DRY_RUN = "dry_run"
    FAILED = "failed"


def values(states: type[StrEnum]) -> tuple[str, ...]:
    """The texts, in declaration order: for a CHECK constraint's IN list."""
    return tuple(state.value for state in states)
