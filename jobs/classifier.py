"""Pure classification: an email's view in, a class out. Rule-based by default; pluggable by configuration."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from jobs.rules import Rule, RulesConfig


@dataclass(frozen=True, slots=True)
class EmailView:
    """What a classifier may look at; built from the stored email, no session or client attached."""

    from_email: str = ""
    from_name: str = ""
    subject: str = ""
    body: str = ""
    folders: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names

    @classmethod
    def from_message(cls, raw: dict[str, Any] | None, *, folders: list[str] | None = None) -> EmailView:
        raw = raw or {}
        senders = raw.get("from") or []
        sender = senders[0] if senders and isinstance(senders[0], dict) else {}
        headers = {
            str(h.get("name", "")).lower(): str(h.get("value", ""))
            for h in raw.get("headers") or []
            if isinstance(h, dict)
        }
        return cls(
            from_email=str(sender.get("email") or "").lower(),
            from_name=str(sender.get("name") or ""),
            subject=str(raw.get("subject") or ""),
            body=str(raw.get("body") or ""),
            folders=tuple(folders if folders is not None else raw.get("folders") or ()),
            headers=headers,
        )


@dataclass(frozen=True, slots=True)
class Classification:
    label: str
    rule: str | None  # which rule decided; None for the default


class Classifier(Protocol):
    def classify(self, email: EmailView) -> Classification: ...


class RuleClassifier:
    """First matching rule wins; every condition a rule sets must match; a list matches on any element."""

    def __init__(self, config: RulesConfig) -> None:
        self._config = config

    def classify(self, email: EmailView) -> Classification:
        for rule in self._config.rules:
            if _matches(rule, email):
                return Classification(label=rule.class_, rule=rule.name)
        return Classification(label=self._config.default_class, rule=None)


def _matches(rule: Rule, email: EmailView) -> bool:
    domain = email.from_email.rpartition("@")[2]
    subject, body = email.subject.lower(), email.body.lower()
    checks: list[tuple[list[str], Callable[[str], bool]]] = [
        (rule.from_address, lambda v: email.from_email == v.lower()),
        (rule.from_address_contains, lambda v: v.lower() in email.from_email),
        (rule.from_domain, lambda v: domain == v.lower() or domain.endswith("." + v.lower())),
        (rule.subject_keywords, lambda v: v.lower() in subject),
        (rule.body_keywords, lambda v: v.lower() in body),
        (rule.header, lambda v: v.lower() in email.headers),
        (rule.folder, lambda v: v in email.folders),
    ]
    conditions = [(values, test) for values, test in checks if values]
    return bool(conditions) and all(any(test(v) for v in values) for values, test in conditions)


def build_classifier(name: str, config: RulesConfig) -> Classifier:
    """`rules`, or `package.module:factory` where factory(config) returns a Classifier."""
    if name == "rules":
        return RuleClassifier(config)
    module_name, _, attribute = name.partition(":")
    if not attribute:
        raise ValueError(f"MAILROOM_CLASSIFIER must be 'rules' or 'module:factory', not {name!r}")
    factory = getattr(importlib.import_module(module_name), attribute)
    classifier: Classifier = factory(config)
    return classifier
