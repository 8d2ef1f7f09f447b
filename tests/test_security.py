"""What a stranger or an unlucky operator can do to a running API: each hole the security review found, closed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from arq.connections import ArqRedis
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from structlog.testing import capture_logs

from core.settings import Settings
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.commands import MAILROOM, cli_env, mailroom
from tests.harness import drain, running_api
from tests.notifications import SECRET, envelope, message, post, truncated

TOKEN = "security-test-admin-token"


@dataclass
class RunningApi:
    process: asyncio.subprocess.Process
    client: httpx.AsyncClient
    port: int

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


@asynccontextmanager
async def running_api_process(settings: Settings, **extra_env: str) -> AsyncIterator[RunningApi]:
    """`mailroom api` as deployed: its own process, so its memory can be read from /proc."""
    port = helpers.free_port()
    env = cli_env(settings) | {
        "MAILROOM_PORT": str(port),
        "MAILROOM_WEBHOOK_SECRETS": SECRET,
        "MAILROOM_ADMIN_TOKEN": TOKEN,
        "MAILROOM_LOG_LEVEL": "ERROR",
        **extra_env,
    }
    process = await asyncio.create_subprocess_exec(
        MAILROOM, "api", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            await helpers.until_answering(client, "/healthz", within=30, what="the API")
            yield RunningApi(process, client, port)
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


@pytest.mark.parametrize(
    ("function", "args", "kwargs"),
    [
        ("process_event", ["1; DROP TABLE emails"], {}),
        ("process_event", [-5], {}),
        ("process_event", [1, "extra"], {}),
        ("classify", [1, "yes"], {}),
        ("act", [True], {}),
        ("sync_grant", [123], {}),
        ("sync_grant", ["grant_1"], {"since": 1e300}),
        ("sync_grant", ["grant_1"], {"page_token": "x" * 5000}),
        ("test_task", [{"not": "text"}], {}),
    ],
)
async def test_jobs_forged_in_redis_with_odd_arguments_are_refused(
    settings: Settings, redis: ArqRedis, fake_nylas: FakeNylas, function: str, args: list[Any], kwargs: dict[str, Any]
) -> None:
    """Redis is a trust boundary: a job someone wrote there by hand runs only on arguments mailroom would send."""
    job = await redis.enqueue_job(function, *args, **kwargs)
    assert job is not None
    await drain(settings)
    assert str(await job.result(timeout=5)).startswith("refused: ")
    assert fake_nylas.requests == [], "nothing reached Nylas"


async def test_a_forged_sync_of_a_grant_mailroom_never_heard_of_does_nothing(
    settings: Settings, redis: ArqRedis, fake_nylas: FakeNylas, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    fake_nylas.seed("someone-elses-grant")
    job = await redis.enqueue_job("sync_grant", "someone-elses-grant")
    assert job is not None
    await drain(settings)
    assert await job.result(timeout=5) == {"grant_id": "someone-elses-grant", "skipped": "unknown grant"}
    assert fake_nylas.requests == []
    assert await helpers.row_counts(sessionmaker) == {"webhook_events": 0, "emails": 0, "grants": 0}


def test_redis_is_locked_and_only_mailroom_reaches_the_datastores(repo_root: Path) -> None:
    """compose's Redis needs a password that every mailroom URL carries; k8s NetworkPolicies fence Redis, PostgreSQL
    and the API."""
    compose = yaml.safe_load((repo_root / "compose.yaml").read_text())
    redis_command = compose["services"]["redis"]["command"]
    assert "--requirepass" in redis_command and "--protected-mode" not in redis_command
    assert compose["x-mailroom-env"]["MAILROOM_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?")
    policies = {
        p["metadata"]["name"]: p["spec"]
        for p in yaml.safe_load_all((repo_root / "deploy/k8s/networkpolicy.yaml").read_text())
    }
    datastores = policies["mailroom-datastores"]
    assert datastores["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mailroom"}}}],
            "ports": [{"protocol": "TCP", "port": 6379}, {"protocol": "TCP", "port": 5432}],
        }
    ]
    assert policies["mailroom-workers"]["ingress"] == []
    api_sources = policies["mailroom-api"]["ingress"][0]["from"]
    assert all("namespaceSelector" in source for source in api_sources), "no pod of this namespace reaches the API"
    assert "networkpolicy.yaml" in (repo_root / "deploy/k8s/kustomization.yaml").read_text()


async def raw_exchange(port: int, *parts: bytes, then_wait: float = 0.0) -> bytes:
    """Send `parts` on a raw connection, stopping once the server answers, and return all it answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()

    async def read_all() -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                received.extend(chunk)

    reading = asyncio.create_task(read_all())
    try:
        for part in parts:
            if received or reading.done():
                break
            try:
                writer.write(part)
                await writer.drain()
            except ConnectionError:
                break
        await asyncio.wait_for(reading, timeout=then_wait + 10)
    finally:
        writer.close()
    return bytes(received)


@pytest.mark.slow
async def test_huge_headers_are_refused_as_they_arrive_and_stall_no_one(settings: Settings) -> None:
    """Two 100 MB headers once took the API to 411 MB and stalled other requests for 2 s."""
    async with running_api_process(settings) as api:
        await api.client.get("/healthz")
        before = api.rss_mb()
        chunk = b"a" * (1024 * 1024)
        head = b"POST /webhooks/nylas HTTP/1.1\r\nhost: x\r\nx-big: "

        async def send_a_huge_header() -> bytes:
            return await raw_exchange(api.port, head, *([chunk] * 100))

        async def healthz_meanwhile() -> float:
            started = asyncio.get_running_loop().time()
            assert (await api.client.get("/healthz")).status_code == 200
            return asyncio.get_running_loop().time() - started

        answers = await asyncio.gather(send_a_huge_header(), send_a_huge_header(), healthz_meanwhile())
        assert [answer.split(b"\r\n", 1)[0] for answer in answers[:2]] == [
            b"HTTP/1.1 431 Request Header Fields Too Large"
        ] * 2
        assert answers[2] < 1.0, f"a health check waited {answers[2]:.2f} s"
        assert api.rss_mb() - before < 20, f"RSS grew from {before:.0f} MB to {api.rss_mb():.0f} MB"


@pytest.mark.slow
async def test_slow_heads_and_bodies_are_timed_out(settings: Settings) -> None:
    async with running_api_process(
        settings, MAILROOM_HEADER_TIMEOUT_SECONDS="1", MAILROOM_BODY_TIMEOUT_SECONDS="1"
    ) as api:
        started = asyncio.get_running_loop().time()
        slow_head = await raw_exchange(api.port, b"GET /healthz HTTP/1.1\r\nhost: x\r\n", then_wait=1)
        assert slow_head.startswith(b"HTTP/1.1 408 Request Timeout")
        slow_body = await raw_exchange(
            api.port,
            b'POST /webhooks/nylas HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"id"',
            then_wait=1,
        )
        assert slow_body.startswith(b"HTTP/1.1 408 Request Timeout")
        assert asyncio.get_running_loop().time() - started < 8
        assert (await api.client.get("/healthz")).status_code == 200, "a prompt client is served as before"


async def test_dashboard_sessions_expire_server_side_and_logout_revokes_them(settings: Settings) -> None:
    admin_settings = settings.model_copy(update={"admin_token": SecretStr(TOKEN)})
    async with running_api(admin_settings) as client:
        login = await client.post("/dashboard/login", data={"token": TOKEN})
        assert login.status_code == 303
        cookie = login.cookies["mailroom_session"]
        assert TOKEN not in cookie and "max-age=43200" in login.headers["set-cookie"].lower()
        client.cookies.set("mailroom_session", cookie)
        assert (await client.get("/events")).status_code == 200

        refused = await client.post("/dashboard/logout")
        assert refused.status_code == 401, "a cross-site form cannot log anyone out"
        assert (await client.post("/dashboard/logout", headers={"X-Mailroom-CSRF": "1"})).status_code == 200
        client.cookies.set("mailroom_session", cookie)  # a copy of the cookie kept from before
        assert (await client.get("/events")).status_code == 401, "the session is revoked on the server"

        second = (await client.post("/dashboard/login", data={"token": TOKEN})).cookies["mailroom_session"]
        assert second != cookie, "every login is a new session"


async def test_guessing_is_slowed_and_logged(settings: Settings) -> None:
    admin_settings = settings.model_copy(update={"admin_token": SecretStr(TOKEN)})
    async with running_api(admin_settings) as client:
        with capture_logs() as logs:
            answers = [
                (await client.post("/dashboard/login", data={"token": f"guess-{n}"})).status_code for n in range(6)
            ]
            answers += [
                (await client.get("/events", headers={"Authorization": f"Bearer guess-{n}"})).status_code
                for n in range(6)
            ]
        assert answers == [401] * 10 + [429] * 2
        assert len([entry for entry in logs if entry["event"] == "admin.auth_failed"]) == 10
        locked = await client.post("/dashboard/login", data={"token": TOKEN})
        assert locked.status_code == 429, "even the right token waits out the window"
        assert (await client.get("/events", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200, (
            "a valid bearer token (an operator's script) is never locked out by someone else's guesses"
        )


@pytest.mark.slow
async def test_the_cookie_is_secure_only_behind_a_trusted_tls_proxy(settings: Settings) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    async with running_api_process(settings) as api:
        login = await api.client.post("/dashboard/login", data={"token": TOKEN}, headers=forwarded)
        assert "secure" not in login.headers["set-cookie"].lower(), "no proxy is trusted by default"
    async with running_api_process(settings, MAILROOM_TRUSTED_PROXIES="127.0.0.1") as api:
        login = await api.client.post("/dashboard/login", data={"token": TOKEN}, headers=forwarded)
        assert "; secure" in login.headers["set-cookie"].lower()


async def test_security_headers_and_a_script_nonce_on_the_dashboard(settings: Settings) -> None:
    async with running_api(settings) as client:
        for path in ("/healthz", "/openapi.json", "/webhooks/nylas?challenge=abc"):
            answer = await client.get(path)
            assert answer.headers["x-content-type-options"] == "nosniff", path
            assert answer.headers["x-frame-options"] == "DENY", path
            assert answer.headers["referrer-policy"] == "no-referrer", path
        page = await client.get("/dashboard")
        policy = page.headers["content-security-policy"]
        nonce = policy.split("'nonce-", 1)[1].split("'", 1)[0]
        assert f'<script nonce="{nonce}">' in page.text and "frame-ancestors 'none'" in policy
        assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";", 1)[0]
        assert (await client.get("/dashboard")).headers["content-security-policy"] != policy, "a nonce per page"


async def test_readiness_does_not_tell_strangers_where_the_servers_are(settings: Settings) -> None:
    hidden = settings.model_copy(update={"database_url": "postgresql://me@127.0.0.2:5999/app"})
    async with running_api(hidden) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert "127.0.0.2" not in answer.text and "5999" not in answer.text


async def test_times_past_the_ends_of_the_calendar_are_a_400_not_a_503(settings: Settings) -> None:
    admin_settings = settings.model_copy(update={"admin_token": SecretStr(TOKEN)})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running_api(admin_settings) as client:
        for value in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
            answer = await client.get("/events", params={"since": value}, headers=auth)
            assert answer.status_code == 400, (value, answer.text)
            replay = await client.post("/replay", json={"until": value}, headers=auth)
            assert replay.status_code == 400, (value, replay.text)
        assert (await client.get("/events", params={"since": "2026-01-01"}, headers=auth)).status_code == 200


def test_containers_and_pods_run_with_least_privilege(repo_root: Path) -> None:
    namespace = yaml.safe_load((repo_root / "deploy/k8s/namespace.yaml").read_text())
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name in ("api.yaml", "worker.yaml", "migrate-job.yaml"):
        (workload,) = [d for d in yaml.safe_load_all((repo_root / "deploy/k8s" / name).read_text()) if "spec" in d][:1]
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
    compose = yaml.safe_load((repo_root / "compose.yaml").read_text())
    for role in ("migrate", "api", "worker"):
        service = compose["services"][role]
        assert service["cap_drop"] == ["ALL"] and service["read_only"] is True, role
        assert "no-new-privileges:true" in service["security_opt"] and service["mem_limit"], role
    ignored = (repo_root / ".dockerignore").read_text().splitlines()
    assert {".env", ".venv", ".git", ".mailroom", "deploy/k8s/secrets.env"} <= set(ignored)
