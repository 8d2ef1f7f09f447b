"""The alert rules as code: valid, each with a promtool unit test that fires and stays quiet, and a runbook."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.helpers import PROMETHEUS_DIR, ROOT

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="NO PROMTOOL: the alert tests need Debian's prometheus package (apt-get install prometheus)",
)
ALERTS = [
    "MailroomNoLiveWorker",
    "MailroomWebhookRejections",
    "MailroomWebhookUnavailable",
    "MailroomDeadLetters",
    "MailroomQueueBacklog",
    "MailroomNylasRateLimited",
    "MailroomGrantPaused",
    "MailroomSyncLagging",
    "MailroomNylasWebhookFailing",
]


def rules() -> list[dict[str, object]]:
    document = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_alerts_are_the_agreed_ones_each_with_summary_description_and_runbook() -> None:
    found = rules()
    assert [rule["alert"] for rule in found] == ALERTS
    readme = (ROOT / "README.md").read_text()
    for rule in found:
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert set(annotations) == {"summary", "description", "runbook"}, rule["alert"]
        assert f"#### {rule['alert']}" in readme, f"no runbook section for {rule['alert']} in the README"
        assert annotations["runbook"] == f"README.md#{str(rule['alert']).lower()}"


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() -> None:
    document = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())
    checks = [check for test in document["tests"] for check in test["alert_rule_test"]]
    for alert in ALERTS:
        mine = [check for check in checks if check["alertname"] == alert]
        assert any(check["exp_alerts"] for check in mine), f"{alert} is never shown firing"
        assert any(not check["exp_alerts"] for check in mine), f"{alert} is never shown quiet"


@needs_promtool
def test_promtool_accepts_the_rules_and_the_config() -> None:
    assert PROMTOOL is not None
    checked = subprocess.run([PROMTOOL, "check", "config", "prometheus.yml"], cwd=PROMETHEUS_DIR, capture_output=True)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert b"SUCCESS: 9 rules found" in checked.stdout


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    assert PROMTOOL is not None
    tested = subprocess.run([PROMTOOL, "test", "rules", "alerts.test.yml"], cwd=PROMETHEUS_DIR, capture_output=True)
    assert tested.returncode == 0, tested.stdout.decode() + tested.stderr.decode()
