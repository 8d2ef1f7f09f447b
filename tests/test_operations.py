"""Operating mailroom over HTTP: readiness, queue depth, metrics, the admin API and its lock."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from jobs.enqueue import enqueue_test_task
from jobs.heartbeat import ALIVE_WITHIN, FORGET_AFTER, Heartbeat, keys
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.commands import cli_env
from tests.harness import drain, running_api
from tests.notifications import envelope, message, post, truncated

TOKEN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_ROUTES = [
    ("GET", "/events"),
    ("GET", "/events/1"),
    ("POST", "/events/1/replay"),
    ("POST", "/replay"),
    ("GET", "/jobs/some-job"),
    ("GET", "/api/overview"),
]


@pytest.fixture
def admin_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"admin_token": Settings(_env_file=None, admin_token=TOKEN).admin_token})


@pytest.fixture
async def ops(admin_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(admin_settings) as client:
        yield client


class TestLock:
    @pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
    async def test_admin_routes_refuse_a_missing_or_wrong_token(
        self, ops: httpx.AsyncClient, method: str, path: str
    ) -> None:
        assert (await ops.request(method, path)).status_code == 401
        wrong = await ops.request(method, path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert TOKEN not in wrong.text

    async def test_the_token_opens_them(self, ops: httpx.AsyncClient) -> None:
        assert (await ops.get("/events", headers=AUTH)).status_code == 200
        assert (await ops.get("/api/overview", headers=AUTH)).status_code == 200

    async def test_without_a_configured_token_the_admin_surface_is_off(self, api: httpx.AsyncClient) -> None:
        response = await api.get("/events", headers={"Authorization": "Bearer anything"})
        assert response.status_code == 503
        assert response.json()["error"] == "admin_disabled"

    async def test_webhook_and_health_stay_open(self, ops: httpx.AsyncClient) -> None:
        assert (await ops.get("/healthz")).status_code == 200
        assert (await ops.get("/webhooks/nylas", params={"challenge": "x"})).text == "x"
        assert (await ops.get("/metrics")).status_code == 200
        assert (await ops.get("/queue")).status_code == 200

    async def test_dashboard_login_sets_a_session_and_changes_need_the_csrf_header(
        self, ops: httpx.AsyncClient
    ) -> None:
        assert (await ops.post("/dashboard/login", data={"token": "wrong"})).status_code == 401
        response = await ops.post("/dashboard/login", data={"token": TOKEN})
        assert response.status_code == 303
        cookie = response.cookies.get("mailroom_session")
        assert cookie and TOKEN not in cookie
        assert "httponly" in response.headers["set-cookie"].lower()
        assert "samesite=strict" in response.headers["set-cookie"].lower()
        ops.cookies.set("mailroom_session", cookie)
        assert (await ops.get("/events")).status_code == 200
        assert (await ops.post("/replay", json={})).status_code == 401, "a cookie alone cannot change anything"
        assert (await ops.post("/replay", json={}, headers={"X-Mailroom-CSRF": "1"})).status_code == 200


class TestReadiness:
    async def test_not_ready_without_a_worker_then_ready_with_one(
        self, settings: Settings, api: httpx.AsyncClient, redis: ArqRedis
    ) -> None:
        response = await api.get("/readyz")
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert checks["database"] == checks["schema"] == checks["redis"] == "ok"
        assert "no worker" in checks["workers"]

        await Heartbeat(redis, settings.queue_name, concurrency=5).beat()
        response = await api.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {
            "ready": True,
            "checks": dict.fromkeys(
                ["database", "schema", "nylas_webhooks", "redis", "workers", "webhook_secrets"], "ok"
            ),
        }

    async def test_a_killed_workers_entry_is_forgotten_by_the_living(self, settings: Settings, redis: ArqRedis) -> None:
        """A killed worker never removes its heartbeat; the next beat of a live one drops it once it is long dead."""
        zset, info = keys(settings.queue_name)
        long_ago = time.time() - FORGET_AFTER - 1
        async with redis.pipeline(transaction=False) as pipe:  # redis-py types pipelines' hash calls precisely
            pipe.zadd(zset, {"killed:1": long_ago, "quiet:2": time.time() - ALIVE_WITHIN - 1})
            pipe.hset(info, mapping={"killed:1": "{}", "quiet:2": "{}"})
            await pipe.execute()

        await Heartbeat(redis, settings.queue_name, concurrency=5).beat()

        async with redis.pipeline(transaction=False) as pipe:
            pipe.zrange(zset, 0, -1)
            pipe.hkeys(info)
            in_zset, in_hash = await pipe.execute()
        names = {n.decode() for n in in_zset}
        assert "killed:1" not in names and "quiet:2" in names
        assert {n.decode() for n in in_hash} == names

    async def test_not_ready_without_a_webhook_secret(self, settings: Settings, redis: ArqRedis) -> None:
        """Every delivery would be refused: a load balancer must not send Nylas here."""
        await Heartbeat(redis, settings.queue_name, concurrency=5).beat()
        async with running_api(settings.model_copy(update={"webhook_secrets": []})) as client:
            response = await client.get("/readyz")
        assert response.status_code == 503
        assert "MAILROOM_WEBHOOK_SECRETS" in response.json()["checks"]["webhook_secrets"]

    async def test_not_ready_without_the_database(self, settings: Settings) -> None:
        dead = settings.model_copy(update={"database_url": "postgresql://nobody@127.0.0.1:1/none"})
        async with running_api(dead) as client:
            response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["database"].startswith("unreachable")


class TestQueue:
    async def test_figures_match_a_known_queue(
        self, settings: Settings, api: httpx.AsyncClient, redis: ArqRedis
    ) -> None:
        for n in range(3):
            await enqueue_test_task(redis, f"now {n}")
        for n in range(2):
            await redis.enqueue_job("test_task", f"later {n}", _defer_by=600)
        await post(api, envelope(message()))  # an open event, waiting for a batch worker: ready work too
        await asyncio.sleep(0.05)

        body = (await api.get("/queue")).json()

        assert body["queue"]["ready"] == 4
        assert body["queue"]["deferred"] == 2
        assert body["queue"]["in_progress"] == 0
        assert body["queue"]["oldest_ready_age_seconds"] >= 0.05
        assert body["events"]["received"] == 1
        assert body["queue"]["waiting_events"] == 1
        assert body["stages"] == {"process": 1, "classify": 0, "act": 0}
        assert body["dead"] == {"events": 0, "emails": 0}


class TestMetrics:
    async def test_counts_from_two_api_processes_add_up(
        self, admin_settings: Settings, ops: httpx.AsyncClient, tmp_path: Path
    ) -> None:
        """Any replica's /metrics shows what every process counted."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        env = cli_env(admin_settings) | {"MAILROOM_PORT": str(port), "MAILROOM_WEBHOOK_SECRETS": "test_webhook_secret"}
        other = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "mailroom"),
            "api",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as second:
                deadline = asyncio.get_running_loop().time() + 20
                while True:
                    try:
                        if (await second.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert asyncio.get_running_loop().time() < deadline, "second API did not start"
                    await asyncio.sleep(0.1)
                for n in range(3):
                    await post(ops, envelope(message(message_id=f"a{n}")))
                sent = [envelope(message(message_id=f"b{n}")) for n in range(2)]
                for payload in sent:
                    await post(second, payload)
                await post(ops, sent[0])  # Nylas's retry of b0, landing on the other replica
                await post(second, envelope(message()), secret="wrong")

                async def totals() -> str:
                    return (await ops.get("/metrics")).text

                text = ""
                deadline = asyncio.get_running_loop().time() + 10
                while 'mailroom_webhooks_total{outcome="queued",type="message.created"} 5.0' not in text:
                    assert asyncio.get_running_loop().time() < deadline, text
                    await asyncio.sleep(0.2)
                    text = await totals()
                assert "mailroom_signature_failures_total 1.0" in text
                assert 'mailroom_webhooks_total{outcome="duplicate",type="message.created"} 1.0' in text
                assert (
                    'mailroom_webhooks_total{outcome="queued",type="message.created"} 5.0'
                    in (await second.get("/metrics")).text
                ), "the other replica serves the same totals"
        finally:
            other.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(other.wait(), 15)
        assert code == 128 + signal.SIGTERM, "the other replica stops cleanly on SIGTERM"

    async def test_stage_metrics_after_a_run(
        self, settings: Settings, ops: httpx.AsyncClient, fake_nylas: FakeNylas
    ) -> None:
        fake_nylas.add_message(message())
        fake_nylas.fail(503, path_contains="/messages/msg_1")
        await post(ops, envelope(truncated(message()), type="message.created.truncated"))
        await drain(settings)

        text = (await ops.get("/metrics")).text
        assert 'mailroom_jobs_total{outcome="succeeded",stage="process"} 1.0' in text
        assert 'mailroom_retries_total{stage="process"} 1.0' in text
        assert 'mailroom_stage_duration_seconds_count{stage="classify"} 1.0' in text
        assert "mailroom_webhook_to_stored_seconds_count 1.0" in text
        assert "mailroom_webhook_to_acted_seconds_count 1.0" in text
        assert "mailroom_queue_ready 0.0" in text


class TestAdminApi:
    async def test_events_filter_page_and_show_a_masked_timeline(
        self,
        settings: Settings,
        ops: httpx.AsyncClient,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        for n in range(5):
            await post(ops, envelope(message(message_id=f"m{n}", subject=f"Secret plan {n}")))
        await post(ops, envelope({"object": "event", "id": "e"}, type="event.created"))
        await drain(settings)

        first = (await ops.get("/events", params={"limit": 2, "status": "processed"}, headers=AUTH)).json()
        assert [e["object_id"] for e in first["items"]] == ["m4", "m3"]
        second = (
            await ops.get(
                "/events", params={"limit": 2, "status": "processed", "before": first["next_before"]}, headers=AUTH
            )
        ).json()
        assert [e["object_id"] for e in second["items"]] == ["m2", "m1"]
        ignored = (await ops.get("/events", params={"status": "ignored"}, headers=AUTH)).json()
        assert [e["type"] for e in ignored["items"]] == ["event.created"]
        found = (await ops.get("/events", params={"q": "m3"}, headers=AUTH)).json()
        assert [e["object_id"] for e in found["items"]] == ["m3"]

        detail = (await ops.get("/events/1", headers=AUTH)).json()
        assert [r["stage"] for r in detail["timeline"]] == ["process", "classify", "act"]
        assert "Secret" not in str(detail) and "ana@" not in str(detail).lower()
        assert detail["email"]["subject"].startswith("S•")
        revealed = (await ops.get("/events/1", params={"reveal": "true"}, headers=AUTH)).json()
        assert revealed["email"]["subject"] == "Secret plan 0"

    async def test_replay_a_dead_event_over_http(
        self,
        settings: Settings,
        ops: httpx.AsyncClient,
        sessionmaker: async_sessionmaker[AsyncSession],
        fake_nylas: FakeNylas,
    ) -> None:
        fake_nylas.add_message(message())
        fake_nylas.fail(503, times=3, path_contains="/messages/msg_1")
        await post(ops, envelope(truncated(message()), type="message.created.truncated"))
        await drain(settings)
        assert (await helpers.events(sessionmaker))[0].status == "dead"

        counted = (await ops.post("/replay", json={"stage": "process"}, headers=AUTH)).json()
        assert counted == {"dry_run": True, "events": 1, "email_stages": 0}
        assert (await helpers.events(sessionmaker))[0].status == "dead"

        assert (await ops.post("/events/1/replay", headers=AUTH)).json() == {
            "replayed": {"events": 1, "email_stages": 0}
        }
        await drain(settings)
        assert (await helpers.events(sessionmaker))[0].status == "processed"
        again = await ops.post("/events/1/replay", headers=AUTH)
        assert again.status_code == 409

    async def test_job_status(self, settings: Settings, ops: httpx.AsyncClient, redis: ArqRedis) -> None:
        job = await enqueue_test_task(redis, "hi")
        assert job is not None
        assert (await ops.get(f"/jobs/{job.job_id}", headers=AUTH)).json()["status"] == "queued"
        await drain(settings)
        done = (await ops.get(f"/jobs/{job.job_id}", headers=AUTH)).json()
        assert (done["status"], done["result"]) == ("complete", {"status": "completed", "message": "hi"})
        assert (await ops.get("/jobs/nope", headers=AUTH)).status_code == 404

    async def test_bad_parameters_are_400(self, ops: httpx.AsyncClient) -> None:
        assert (await ops.get("/events", params={"since": "yesterday"}, headers=AUTH)).status_code == 400
        assert (await ops.get("/events", params={"limit": "lots"}, headers=AUTH)).status_code == 400
        assert (await ops.post("/replay", content=b"[", headers=AUTH)).status_code == 400
        assert (await ops.post("/replay", json={"stage": "nope"}, headers=AUTH)).status_code == 400
        assert (await ops.get("/events/999", headers=AUTH)).status_code == 404
