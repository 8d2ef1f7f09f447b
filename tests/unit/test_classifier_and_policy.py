"""Pure classification and action planning, on the shipped rules and on rules written here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobs.classifier import Classification, EmailView, RuleClassifier, build_classifier
from jobs.errors import GrantPaused, PermanentError, TransientError
from jobs.failures import Verdict, judge
from jobs.policy import decide
from jobs.rules import RulesConfig, RulesError, load_rules
from tests.harness import make_settings
from tests.notifications import message

SHIPPED = load_rules()


def view(**fields: Any) -> EmailView:
    return EmailView.from_message(message(**fields))


@pytest.mark.parametrize(
    ("fields", "label", "rule"),
    [
        ({"headers": [{"name": "List-Unsubscribe", "value": "<mailto:x>"}]}, "newsletter", "newsletter-header"),
        ({"from": [{"email": "weekly@news.substack.com"}]}, "newsletter", "newsletter-platforms"),
        ({"from": [{"email": "no-reply@github.com"}], "subject": "PR"}, "notification", "automated-notifications"),
        ({"subject": "Your receipt"}, "finance", "finance"),
        ({"subject": "URGENT: call me"}, "urgent", "urgent"),
        ({"subject": "lunch?"}, "personal", None),
    ],
)
def test_shipped_rules(fields: dict[str, object], label: str, rule: str | None) -> None:
    assert RuleClassifier(SHIPPED).classify(view(**fields)) == Classification(label, rule)


def test_first_matching_rule_wins_and_all_conditions_must_hold() -> None:
    config = RulesConfig.model_validate(
        {
            "default_class": "other",
            "rules": [
                {"name": "boss-urgent", "class": "vip", "from_address": ["boss@corp.com"], "subject_keywords": ["q3"]},
                {"name": "corp", "class": "work", "from_domain": ["corp.com"]},
            ],
        }
    )
    classifier = RuleClassifier(config)
    assert classifier.classify(view(**{"from": [{"email": "Boss@Corp.com"}], "subject": "Q3 plan"})).label == "vip"
    assert classifier.classify(view(**{"from": [{"email": "boss@corp.com"}], "subject": "lunch"})).label == "work"
    assert classifier.classify(view(**{"from": [{"email": "a@eu.corp.com"}]})).label == "work"
    assert classifier.classify(view(**{"from": [{"email": "a@notcorp.com"}]})).label == "other"


def test_folder_and_body_conditions() -> None:
    config = RulesConfig.model_validate(
        {"rules": [{"name": "spam-ish", "class": "junk", "folder": ["SPAM"], "body_keywords": ["winner"]}]}
    )
    classifier = RuleClassifier(config)
    assert classifier.classify(view(folders=["SPAM"], body="You are a WINNER")).label == "junk"
    assert classifier.classify(view(folders=["INBOX"], body="You are a WINNER")).label == "other"


def test_a_bad_rules_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[rules]]\nname = "x"\nclass = "y"\nsubject_keyword = ["typo"]\n')
    with pytest.raises(RulesError, match="subject_keyword"):
        load_rules(path)
    path.write_text('[actions]\nurgent = [{ kind = "teleport" }]\n')
    with pytest.raises(RulesError, match="teleport"):
        load_rules(path)


def test_another_classifier_is_plugged_in_by_configuration() -> None:
    classifier = build_classifier("tests.unit.test_classifier_and_policy:AlwaysSpam", SHIPPED)
    assert classifier.classify(view()) == Classification("spam", "model")


class AlwaysSpam:
    def __init__(self, config: RulesConfig) -> None:
        self.config = config

    def classify(self, email: EmailView) -> Classification:
        return Classification("spam", "model")


def test_actions_and_their_keys_are_stable_per_message() -> None:
    email = view(subject="Urgent thing", **{"from": [{"name": "Ana Lima", "email": "ana@x.com"}]})
    first = decide(SHIPPED, label="urgent", grant_id="g", message_id="m", email=email)
    again = decide(SHIPPED, label="urgent", grant_id="g", message_id="m", email=email)
    other = decide(SHIPPED, label="urgent", grant_id="g", message_id="m2", email=email)
    assert [a.kind for a in first] == ["star", "draft_reply"]
    assert [a.idempotency_key for a in first] == [a.idempotency_key for a in again]
    assert not {a.idempotency_key for a in first} & {a.idempotency_key for a in other}
    draft = first[1].params
    assert draft["subject"] == "Re: Urgent thing"
    assert draft["body"].startswith("Hi Ana,")


def test_a_message_whose_content_changed_is_still_answered_once() -> None:
    """message.updated changes the subject between two tries of act: the reply is the same action."""
    before = view(subject="Urgent thing", **{"from": [{"name": "Ana Lima", "email": "ana@x.com"}]})
    after = view(subject="Urgent thing (edited)", **{"from": [{"name": "Ana Lima", "email": "ana@x.com"}]})
    first = decide(SHIPPED, label="urgent", grant_id="g", message_id="m", email=before)
    again = decide(SHIPPED, label="urgent", grant_id="g", message_id="m", email=after)
    assert [a.idempotency_key for a in first] == [a.idempotency_key for a in again]
    assert first[1].params != again[1].params


def test_no_actions_for_a_class_without_any() -> None:
    assert decide(SHIPPED, label="personal", grant_id="g", message_id="m", email=view()) == []


@pytest.mark.parametrize(
    ("exc", "attempt", "verdict"),
    [
        (TransientError("503"), 1, Verdict.RETRY),
        (TransientError("503"), 3, Verdict.DEAD),
        (TimeoutError(), 1, Verdict.RETRY),
        (PermanentError("gone", status_code=404), 1, Verdict.MISSING),
        (PermanentError("who are you", status_code=401), 1, Verdict.PARK),
        (PermanentError("forbidden", status_code=403), 1, Verdict.PARK),
        (PermanentError("bad data"), 1, Verdict.DEAD),
        (GrantPaused(), 1, Verdict.PARK),
        (RuntimeError("a bug"), 1, Verdict.RETRY),
        (RuntimeError("a bug"), 3, Verdict.DEAD),
    ],
)
def test_the_retry_policy(exc: Exception, attempt: int, verdict: Verdict) -> None:
    assert judge(exc, attempt=attempt, settings=make_settings(job_max_tries=3)).verdict is verdict


def test_dead_letters_keep_the_traceback() -> None:
    try:
        raise TransientError("still down")
    except TransientError as exc:
        failure = judge(exc, attempt=3, settings=make_settings(job_max_tries=3))
    assert failure.traceback is not None and "still down" in failure.traceback


def test_a_strangers_subject_and_name_never_become_markup_in_a_draft() -> None:
    email = view(
        subject='<img src=x onerror="steal()">',
        **{"from": [{"name": "<b>Mallory</b> Evil", "email": "m@x.com"}]},
    )
    (_, draft) = decide(SHIPPED, label="urgent", grant_id="g", message_id="m", email=email)
    body = draft.params["body"]
    assert "<img" not in body and "<b>" not in body
    assert "&lt;img src=x onerror=&quot;steal()&quot;&gt;" in body and body.startswith("Hi &lt;b&gt;Mallory&lt;/b&gt;,")
    assert "<br>" in body, "the template's line breaks survive in HTML"
