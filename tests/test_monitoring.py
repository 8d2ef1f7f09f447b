"""A real Prometheus (Debian's binary) scraping a running `mailroom api` every second, with a worker beside it:
every alert rule evaluates on the live metrics, rejections fire and resolve, a killed worker fires
MailroomNoLiveWorker, and every Grafana panel's query runs without error."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from tests import helpers
from tests.commands import MAILROOM, cli_env
from tests.helpers import PROMETHEUS_DIR, ROOT

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="NO PROMETHEUS: this test needs Debian's prometheus package (apt-get install prometheus)",
    ),
    pytest.mark.slow,
]
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}


def time_scaled_rules(target: Path) -> None:
    """The shipped rules with their windows and `for` durations shrunk to seconds, as group `mailroom-fast`, so a
    test can watch them fire and resolve; the shipped timings are proven by promtool (tests/test_alerts.py)."""
    text = (PROMETHEUS_DIR / "alerts.yml").read_text()
    text = text.replace("- name: mailroom\n", "- name: mailroom-fast\n")
    text = re.sub(r"\[\d+m\]", "[20s]", text)
    text = re.sub(r"for: \d+m", "for: 2s", text)
    target.write_text(text)


@asynccontextmanager
async def prometheus(tmp_path: Path, api_port: int) -> AsyncIterator[httpx.AsyncClient]:
    assert PROMETHEUS is not None
    time_scaled_rules(tmp_path / "fast.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROMETHEUS_DIR / "alerts.yml"), str(tmp_path / "fast.yml")],
        "scrape_configs": [{"job_name": "mailroom", "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = helpers.free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await helpers.until_answering(client, "/-/ready", within=60, what="Prometheus")
            yield client
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)


async def rules_by_group(client: httpx.AsyncClient) -> dict[str, dict[str, dict[str, Any]]]:
    groups = (await client.get("/api/v1/rules")).json()["data"]["groups"]
    return {group["name"]: {rule["name"]: rule for rule in group["rules"]} for group in groups}


async def until(predicate: Any, *, what: str, within: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out after {within}s waiting for {what}"
        await asyncio.sleep(0.5)


async def fast_state(client: httpx.AsyncClient, alert: str) -> str:
    return str((await rules_by_group(client))["mailroom-fast"][alert]["state"])


async def test_alerts_and_dashboard_on_a_real_prometheus(settings: Settings, tmp_path: Path) -> None:
    api_port = helpers.free_port()
    env = cli_env(settings) | {"MAILROOM_PORT": str(api_port), "MAILROOM_WEBHOOK_SECRETS": "monitoring-secret"}
    api = await asyncio.create_subprocess_exec(MAILROOM, "api", env=env, stderr=asyncio.subprocess.DEVNULL)
    worker = await asyncio.create_subprocess_exec(MAILROOM, "worker", env=env, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as mailroom:
            await helpers.until_answering(mailroom, "/readyz", within=60, what="mailroom api with a live worker")
            async with prometheus(tmp_path, api_port) as client:

                async def scraped_and_evaluated() -> bool:
                    targets = (await client.get("/api/v1/targets")).json()["data"]["activeTargets"]
                    groups = await rules_by_group(client)
                    rules = [rule for group in groups.values() for rule in group.values()]
                    return (
                        [t["health"] for t in targets] == ["up"]
                        and len(rules) == 18
                        and all(rule["health"] == "ok" and rule["evaluationTime"] > 0 for rule in rules)
                    )

                await until(scraped_and_evaluated, what="every rule evaluated without error on the live metrics")
                assert await fast_state(client, "MailroomWebhookRejections") == "inactive"
                assert await fast_state(client, "MailroomNoLiveWorker") == "inactive"

                # Every Grafana panel's query, as Grafana would send it.
                dashboard = json.loads((ROOT / "deploy" / "grafana" / "mailroom.json").read_text())
                for panel in dashboard["panels"]:
                    for target in panel["targets"]:
                        query = target["expr"]
                        for variable, value in GRAFANA_VARIABLES.items():
                            query = query.replace(variable, value)
                        answer = (await client.get("/api/v1/query", params={"query": query})).json()
                        assert answer["status"] == "success", (panel["title"], query, answer)

                # Signed deliveries refused: each is a notification Nylas will not resend.
                for _ in range(3):
                    refused = await mailroom.post("/webhooks/nylas", content=b"{}", headers={"x-nylas-signature": "0"})
                    assert refused.status_code == 401

                async def rejections(state: str) -> bool:
                    return await fast_state(client, "MailroomWebhookRejections") == state

                await until(lambda: rejections("firing"), what="MailroomWebhookRejections to fire")
                await until(lambda: rejections("inactive"), what="MailroomWebhookRejections to resolve")

                worker.send_signal(signal.SIGKILL)
                await worker.wait()

                async def no_worker_firing() -> bool:
                    return await fast_state(client, "MailroomNoLiveWorker") == "firing"

                await until(no_worker_firing, what="MailroomNoLiveWorker once the only worker was killed")
    finally:
        for process in (api, worker):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), timeout=30)
