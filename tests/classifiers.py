"""Classifiers for tests, loaded the way users load theirs (MAILROOM_CLASSIFIER=module:factory)."""

from __future__ import annotations

from jobs.classifier import Classification, EmailView, RuleClassifier
from jobs.rules import RulesConfig


class _Exploding(RuleClassifier):
    def classify(self, email: EmailView) -> Classification:
        if "boom" in email.subject.lower():
            raise RuntimeError("this rule raises on 'boom'")
        return super().classify(email)


def exploding(config: RulesConfig) -> RuleClassifier:
    """The shipped rules, except that a subject with "boom" makes the classifier raise."""
    return _Exploding(config)
