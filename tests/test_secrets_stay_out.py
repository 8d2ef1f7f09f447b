"""Tokens, secrets and email content never reach logs, error bodies or metrics, even at DEBUG and on failures."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from core.settings import Settings
from mailroom.fake_nylas import API_KEY, FakeNylas
from service.signatures import sign
from tests import helpers
from tests.commands import MAILROOM, cli_env
from tests.notifications import SECRET, encode, envelope, message, truncated

TOKEN = "admin-token-that-must-not-leak"
SUBJECT = "URGENT: the quarterly numbers nobody may see"
BODY = "<p>salary of the CEO: 1234567</p>"
SENDER = "whistleblower@example.org"


async def test_nothing_secret_or_personal_in_logs_errors_or_metrics(
    settings: Settings, fake_nylas: FakeNylas, tmp_path: Path
) -> None:
    full = message(message_id="secret-1", subject=SUBJECT, body=BODY) | {"from": [{"email": SENDER}]}
    fake_nylas.add_message(full)
    fake_nylas.fail(503, path_contains="/messages/secret-1")  # a failure: its error is logged and stored
    port = helpers.free_port()
    env = cli_env(settings) | {
        "MAILROOM_PORT": str(port),
        "MAILROOM_ADMIN_TOKEN": TOKEN,
        "MAILROOM_WEBHOOK_SECRETS": SECRET,
        "MAILROOM_LOG_LEVEL": "DEBUG",
        "MAILROOM_RETRY_BASE_DELAY": "0.01",
        "MAILROOM_RETRY_MAX_DELAY": "0.05",
    }
    log = tmp_path / "all.log"
    answers: list[str] = []
    with log.open("wb") as out:
        api = await asyncio.create_subprocess_exec(MAILROOM, "api", env=env, stdout=out, stderr=out)
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                await helpers.until_answering(client, "/healthz", within=30, what="the API")
                raw = encode(envelope(truncated(full), type="message.created.truncated"))
                stored = await client.post(
                    "/webhooks/nylas", content=raw, headers={"x-nylas-signature": sign(SECRET, raw)}
                )
                assert stored.status_code == 200
                complete = encode(envelope(full))
                answers += [
                    (
                        await client.post("/webhooks/nylas", content=complete, headers={"x-nylas-signature": "0" * 64})
                    ).text,
                    (await client.get("/events", headers={"Authorization": f"Bearer {TOKEN}x"})).text,
                    (await client.get("/events", params={"token": TOKEN})).text,
                    (await client.post("/dashboard/login", data={"token": TOKEN + "x"})).text,
                    (await client.get("/events", headers={"Authorization": f"Bearer {TOKEN}"})).text,
                ]
                worker = await asyncio.create_subprocess_exec(
                    MAILROOM, "worker", "--burst", env=env, stdout=out, stderr=out
                )
                assert await worker.wait() == 0
                answers.append(
                    (
                        await client.get(
                            f"/events/{stored.json()['event_id']}", headers={"Authorization": f"Bearer {TOKEN}"}
                        )
                    ).text
                )
                answers.append((await client.get("/metrics")).text)
                answers.append((await client.get("/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})).text)
        finally:
            api.terminate()
            await api.wait()

    logs = log.read_text()
    assert "webhook.queued" in logs and "stage.succeeded" in logs, "DEBUG logs were written"
    assert "Nylas answered 503" in logs, "the failure was logged"
    everything = logs + "\n".join(answers)
    for secret in (TOKEN, SECRET, API_KEY):
        assert secret not in everything
    for content in (SUBJECT, "quarterly numbers", BODY, "1234567", SENDER):
        assert content not in everything
