"""What a stranger or an unlucky operator can do to a running API: each hole the security review found, closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.fake_nylas import FakeNylas
from mailroom.settings import Settings
from tests import helpers
from tests.conftest import drain, running_api
from tests.notifications import SECRET, envelope, message, post, truncated
from tests.test_cli import MAILROOM, cli_env, mailroom

TOKEN = "security-test-admin-token"


@dataclass
class RunningApi:
    process: asyncio.subprocess.Process
    client: httpx.AsyncClient

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


@asynccontextmanager
async def running_api_process(settings: Settings) -> AsyncIterator[RunningApi]:
    """`mailroom api` as deployed: its own process, so its memory can be read from /proc."""
    port = helpers.free_port()
    env = cli_env(settings) | {
        "MAILROOM_PORT": str(port),
        "MAILROOM_WEBHOOK_SECRETS": SECRET,
        "MAILROOM_ADMIN_TOKEN": TOKEN,
        "MAILROOM_LOG_LEVEL": "ERROR",
    }
    process = await asyncio.create_subprocess_exec(
        MAILROOM, "api", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            await helpers.until_answering(client, "/healthz", within=30, what="the API")
            yield RunningApi(process, client)
        assert process.returncode is None, "the API stayed up"
    finally:
        process.terminate()
        await process.wait()


async def fifty_megabytes() -> AsyncIterator[bytes]:
    """A body with no Content-Length (chunked), as an attacker would send to get past a declared-size check."""
    for _ in range(50):
        yield b"token=" + b"x" * (1024 * 1024 - 6)


@pytest.mark.slow
async def test_no_body_is_read_past_its_limit(settings: Settings) -> None:
    """Login forms and replay filters are bounded before they are read: 413, and the API's memory stays put."""
    async with running_api_process(settings) as api:
        await api.client.post("/dashboard/login", data={"token": "wrong"})  # warm-up
        before = api.rss_mb()
        auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        for _ in range(3):
            declared = await api.client.post("/dashboard/login", content=b"token=" + b"x" * (50 * 1024 * 1024))
            assert declared.status_code == 413
            chunked = await api.client.post("/dashboard/login", content=fifty_megabytes())
            assert chunked.status_code == 413
            replay = await api.client.post(
                "/replay", content=b'{"error": "' + b"x" * (50 * 1024 * 1024) + b'"}', headers=auth
            )
            assert replay.status_code == 413
        after = api.rss_mb()
        assert after - before < 20, f"RSS grew from {before:.0f} MB to {after:.0f} MB"
        assert (await api.client.post("/dashboard/login", data={"token": TOKEN})).status_code == 303


async def test_a_replay_with_no_filter_must_say_all(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    """The dashboard's per-row button once replayed every dead letter: now no filter at all is refused unless the
    body says "all": true, and one email is replayed by its id."""
    fake_nylas.fail(503, times=6, path_contains="/messages/")
    admin = settings.model_copy(update={"admin_token": SecretStr(TOKEN)})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running_api(admin) as client:
        for n in range(2):
            await post(client, envelope(truncated(message(message_id=f"gone{n}")), type="message.created.truncated"))
        await drain(admin)
        assert [e.status for e in await helpers.events(sessionmaker)] == ["dead", "dead"]

        refused = await client.post("/replay", json={"dry_run": False}, headers=auth)
        assert refused.status_code == 400
        assert '"all": true' in refused.json()["detail"]
        counted = await client.post("/replay", json={}, headers=auth)
        assert counted.json() == {"dry_run": True, "events": 2, "email_stages": 0}, "a dry run needs no 'all'"
        assert [e.status for e in await helpers.events(sessionmaker)] == ["dead", "dead"]

        one = await client.post("/replay", json={"events": [1], "dry_run": False}, headers=auth)
        assert one.json() == {"dry_run": False, "events": 1, "email_stages": 0}
        assert [e.status for e in await helpers.events(sessionmaker)] == ["queued", "dead"]
        everything = await client.post("/replay", json={"all": True, "dry_run": False}, headers=auth)
        assert everything.json() == {"dry_run": False, "events": 1, "email_stages": 0}
        assert (await client.post("/replay", json={"emails": ["x"]}, headers=auth)).status_code == 400


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("MAILROOM_ADMIN_TOKEN", "CHANGE-ME", "MAILROOM_ADMIN_TOKEN: a placeholder value, not a secret"),
        ("MAILROOM_WEBHOOK_SECRETS", "a-real-secret-0123,change-me", "MAILROOM_WEBHOOK_SECRETS: a placeholder value"),
        ("MAILROOM_WEBHOOK_SECRETS", "short-secret", "MAILROOM_WEBHOOK_SECRETS: 12 characters; use at least 16"),
        ("MAILROOM_ADMIN_TOKEN", "tok", "MAILROOM_ADMIN_TOKEN: 3 characters; use at least 16"),
    ],
)
async def test_placeholder_and_short_secrets_are_refused_at_start(
    settings: Settings, variable: str, value: str, says: str
) -> None:
    code, _, err = await mailroom(settings, "api", env={variable: value, "MAILROOM_PORT": str(helpers.free_port())})
    assert code == 1
    assert "Traceback" not in err
    assert says in err.strip().splitlines()[-1]


def test_no_deployment_file_ships_a_secret_value(repo_root: Path) -> None:
    """k8s makes its Secret from a file the user writes; compose has no PostgreSQL password of its own."""
    kustomization = yaml.safe_load((repo_root / "deploy/k8s/kustomization.yaml").read_text())
    assert kustomization["secretGenerator"] == [{"name": "mailroom-secrets", "envs": ["secrets.env"]}]
    assert "deploy/k8s/secrets.env" in (repo_root / ".gitignore").read_text()
    for path in [*(repo_root / "deploy/k8s").glob("*.yaml"), repo_root / "compose.yaml"]:
        assert "CHANGE-ME" not in path.read_text().upper(), path
    example = (repo_root / "deploy/k8s/secrets.env.example").read_text().splitlines()
    assert all(line.endswith("=") for line in example if line and not line.startswith("#"))
    compose = (repo_root / "compose.yaml").read_text()
    assert "${POSTGRES_PASSWORD:?" in compose and "${POSTGRES_PASSWORD:-" not in compose
