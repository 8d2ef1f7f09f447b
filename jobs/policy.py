"""Pure: which actions a class calls for, with the idempotency key that makes each happen at most once."""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from typing import Any

import orjson

from jobs.classifier import EmailView
from jobs.rules import RulesConfig

# Kinds whose effect a repeat would duplicate (a second draft, a second forward). The others set state.
NOT_REPEATABLE = frozenset({"draft_reply", "forward"})


@dataclass(frozen=True, slots=True)
class PlannedAction:
    kind: str
    params: dict[str, Any]
    idempotency_key: str


def decide(config: RulesConfig, *, label: str, grant_id: str, message_id: str, email: EmailView) -> list[PlannedAction]:
    planned = []
    for spec in config.actions.get(label, []):
        configured = spec.model_dump(exclude={"kind"})
        # The key comes from the rule's own parameters, not from the email: a later notification that changes the
        # subject must not make "reply to this message" a second, different action (the soak found two drafts).
        digest = hashlib.sha256(orjson.dumps(configured, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
        params = configured
        if spec.kind == "draft_reply":
            params = {"body": render(configured["template"], email), "subject": reply_subject(email.subject)}
        key = f"{grant_id}:{message_id}:{spec.kind}:{digest}"
        planned.append(PlannedAction(kind=spec.kind, params=params, idempotency_key=key))
    return planned


def render(template: str, email: EmailView) -> str:
    """The draft's HTML body: the operator's template, with the sender's words escaped (a subject or a name is text
    from a stranger and must not become markup in someone's drafts) and line breaks kept."""
    first = email.from_name.split()[0] if email.from_name.strip() else email.from_email.partition("@")[0]
    values = {"subject": email.subject, "from_name": email.from_name, "from_email": email.from_email}
    escaped = {name: html.escape(value) for name, value in {**values, "first_name": first}.items()}
    return template.format_map(escaped).replace("\n", "<br>\n")


def reply_subject(subject: str) -> str:
    return subject if subject.lower().startswith("re:") else f"Re: {subject}"
