"""`mailroom webhooks`: the application's destinations at Nylas, through the SDK, against the fake Nylas."""

from __future__ import annotations

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from jobs.triggers import PROCESSED_TRIGGERS
from mailroom.fake_nylas import FakeNylas
from tests import helpers, notifications
from tests.commands import mailroom
from tests.harness import drain, running_api

URL = "https://mail.example.com/webhooks/nylas"


async def test_create_subscribes_to_what_mailroom_processes_and_prints_the_secret_once(
    settings: Settings, fake_nylas: FakeNylas
) -> None:
    checked_now = {"MAILROOM_WEBHOOK_SECRETS": "the-secret-mailroom-checks-now"}
    code, out, err = await mailroom(
        settings, "webhooks", "create", "--url", URL, "--notify", "ops@example.com", env=checked_now
    )
    assert code == 0, err
    (created,) = fake_nylas.webhooks.values()
    assert created["webhook_url"] == URL
    assert created["trigger_types"] == list(PROCESSED_TRIGGERS)
    assert created["notification_email_addresses"] == ["ops@example.com"]
    assert f"secret (shown once): {created['webhook_secret']}" in out
    assert f"MAILROOM_WEBHOOK_SECRETS={created['webhook_secret']},<the 1 secret set now>" in out, "rotation, no gap"

    code, out, _ = await mailroom(settings, "webhooks", "list")
    assert code == 0
    assert created["id"] in out and "active" in out and URL in out
    assert created["webhook_secret"] not in out, "a secret is shown when made, never listed"


async def test_rotate_secret_and_delete(settings: Settings, fake_nylas: FakeNylas) -> None:
    webhook_id = fake_nylas.add_webhook(URL)
    old = fake_nylas.webhooks[webhook_id]["webhook_secret"]
    code, out, err = await mailroom(settings, "webhooks", "rotate-secret", webhook_id)
    assert code == 0, err
    new = fake_nylas.webhooks[webhook_id]["webhook_secret"]
    assert new != old and f"secret (shown once): {new}" in out
    assert "drop the old secret" in out

    code, out, _ = await mailroom(settings, "webhooks", "delete", webhook_id)
    assert code == 1 and "--yes" in out and webhook_id in fake_nylas.webhooks, "asks first"
    code, out, err = await mailroom(settings, "webhooks", "delete", webhook_id, "--yes")
    assert code == 0, err
    assert fake_nylas.webhooks == {}


async def test_what_nylas_would_refuse_is_said_clearly(settings: Settings, fake_nylas: FakeNylas) -> None:
    for url, said in (
        ("http://mail.example.com/webhooks/nylas", "only to https://"),
        ("https://localhost:8000/webhooks/nylas", "not reachable from the internet"),
        ("https://10.1.2.3/webhooks/nylas", "not reachable from the internet"),
    ):
        code, _, err = await mailroom(settings, "webhooks", "create", "--url", url)
        assert code != 0 and said in err, (url, err)
    assert not fake_nylas.requests_to("/v3/webhooks"), "refused before asking Nylas"

    code, _, err = await mailroom(settings, "webhooks", "rotate-secret", "wh_nope")
    assert code != 0 and "no webhook destination wh_nope" in err
    wrong_key = settings.model_copy(update={"nylas_api_key": SecretStr("nyk_wrong_key_0000")})
    code, _, err = await mailroom(wrong_key, "webhooks", "list")
    assert code != 0 and "refused the API key" in err and "MAILROOM_NYLAS_API_KEY" in err


async def test_send_test_webhook_signs_a_grant_notification_as_nylas_would(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with running_api(settings) as client:
        code, out, err = await mailroom(
            settings,
            "send-test-webhook",
            *("--url", f"{client.base_url}/webhooks/nylas", "--type", "grant.expired", "--grant", "grant_7"),
            env={"MAILROOM_WEBHOOK_SECRETS": notifications.SECRET},
        )
    assert code == 0, err
    assert "grant.expired for grant_7 -> " in out and ": 200 " in out
    await drain(settings)
    grant = await helpers.grant(sessionmaker, "grant_7")
    assert grant is not None and grant.status == "expired"
