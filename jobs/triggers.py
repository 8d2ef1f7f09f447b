"""Which Nylas notification types mailroom acts on: shared by the API (to store the rest as ignored) and the worker."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    MESSAGE = "message"  # created or updated: upsert the message's current state
    MESSAGE_DELETED = "message_deleted"
    GRANT = "grant"


# Suffixes Nylas appends to message triggers; they can combine (`message.created.cleaned.truncated`).
MESSAGE_SUFFIXES = frozenset({"truncated", "transformed", "cleaned"})
_BASES = {
    "message.created": Kind.MESSAGE,
    "message.updated": Kind.MESSAGE,
    "message.deleted": Kind.MESSAGE_DELETED,
    "grant.expired": Kind.GRANT,
    "grant.updated": Kind.GRANT,
    "grant.deleted": Kind.GRANT,
}
# What `mailroom webhooks create` subscribes a destination to by default.
PROCESSED_TRIGGERS = tuple(_BASES)
GRANT_STATUS_BY_TYPE = {"grant.expired": "expired", "grant.updated": "active", "grant.deleted": "deleted"}


@dataclass(frozen=True, slots=True)
class Trigger:
    type: str
    base: str
    kind: Kind
    truncated: bool


def parse_trigger(type_: str) -> Trigger | None:
    """The trigger behind a notification type, or None for a type we store but do not process."""
    parts = type_.split(".")
    base, suffixes = ".".join(parts[:2]), parts[2:]
    kind = _BASES.get(base)
    if kind is None:
        return None
    if suffixes and (kind is not Kind.MESSAGE or not set(suffixes) <= MESSAGE_SUFFIXES):
        return None
    return Trigger(type=type_, base=base, kind=kind, truncated="truncated" in suffixes)
