"""The deployment files agree with the code: probes hit real endpoints, KEDA reads a real /queue field,
grace periods cover the shutdown grace, and every role's command exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml
from arq.connections import ArqRedis

from core.settings import Settings
from jobs.heartbeat import Heartbeat
from mailroom.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def containers(name: str) -> list[dict[str, Any]]:
    found = []
    for doc in documents(name):
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        found.extend(spec.get("containers", []))
    return found


def test_every_role_runs_a_real_command() -> None:
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert commands is not None
    for manifest in ("api.yaml", "worker.yaml", "migrate-job.yaml"):
        for container in containers(manifest):
            assert container["args"][0] in commands
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    for service in ("migrate", "api", "worker"):
        assert compose["services"][service]["command"][0] in commands
    assert compose["services"]["worker"]["deploy"]["replicas"] > 1


def test_grace_periods_cover_the_shutdown_grace() -> None:
    grace = Settings.model_fields["shutdown_grace_seconds"].default
    for manifest in ("api.yaml", "worker.yaml"):
        (deployment,) = [d for d in documents(manifest) if d["kind"] == "Deployment"]
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= grace + 5
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    for service in ("api", "worker"):
        assert int(compose["services"][service]["stop_grace_period"].rstrip("s")) >= grace + 5


def test_keda_scales_the_worker_deployment_from_the_api_service() -> None:
    (scaled,) = documents("keda-scaledobject.yaml")
    worker = next(d for d in documents("worker.yaml") if d["kind"] == "Deployment")
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "metrics-api"
    service = next(d for d in documents("api.yaml") if d["kind"] == "Service")
    assert trigger["metadata"]["url"].startswith(f"http://{service['metadata']['name']}.")
    assert trigger["metadata"]["url"].endswith("/queue")


async def test_keda_value_location_exists_in_queue(api: httpx.AsyncClient) -> None:
    """Follow the ScaledObject's valueLocation through a live /queue answer."""
    (scaled,) = documents("keda-scaledobject.yaml")
    value: Any = (await api.get("/queue")).json()
    for part in scaled["spec"]["triggers"][0]["metadata"]["valueLocation"].split("."):
        value = value[part]
    assert isinstance(value, int)


async def test_probes_hit_real_endpoints(api: httpx.AsyncClient, settings: Settings, redis: ArqRedis) -> None:
    """Liveness answers 200 with no worker; readiness says 503 until a worker beats, then 200."""
    (container,) = containers("api.yaml")
    assert (await api.get(container["livenessProbe"]["httpGet"]["path"])).status_code == 200
    readiness = container["readinessProbe"]["httpGet"]["path"]
    assert (await api.get(readiness)).status_code == 503
    await Heartbeat(redis, settings.queue_name, concurrency=1).beat()
    assert (await api.get(readiness)).status_code == 200
