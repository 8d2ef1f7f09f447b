"""Ordinary mistakes get one clear line and a non-zero exit from the `mailroom` command, never a traceback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from core.settings import Settings
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.commands import MAILROOM, cli_env, mailroom


def one_line(stderr: str) -> str:
    """The whole of what the command said on stderr, which must be a single line and no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("MAILROOM_REDIS_URL", "redis://127.0.0.1:abc/0", "MAILROOM_REDIS_URL: the port is not a number"),
        ("MAILROOM_REDIS_URL", "http://127.0.0.1:6379", "MAILROOM_REDIS_URL: expected redis://"),
        ("MAILROOM_REDIS_URL", "redis://127.0.0.1:6379/queue", "MAILROOM_REDIS_URL: the database 'queue' is not"),
        ("MAILROOM_DATABASE_URL", "postgresql://me@db:fivefour/app", "MAILROOM_DATABASE_URL: the port is not a number"),
        ("MAILROOM_DATABASE_URL", "mysql://me@db/app", "MAILROOM_DATABASE_URL: scheme mysql:// is not PostgreSQL"),
        ("MAILROOM_DATABASE_URL", "not a url", "MAILROOM_DATABASE_URL: not a URL"),
        ("MAILROOM_NYLAS_API_URI", "ftp://api.us.nylas.com", "MAILROOM_NYLAS_API_URI: expected https://"),
        ("MAILROOM_PORT", "eighty", "MAILROOM_PORT: Input should be a valid integer"),
    ],
)
async def test_a_malformed_setting_is_named_in_one_line(
    settings: Settings, variable: str, value: str, says: str
) -> None:
    code, out, err = await mailroom(settings, "stats", env={variable: value})
    assert code == 2
    assert says in one_line(err)
    assert out == ""


ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


async def test_a_database_that_does_not_exist_is_called_that(settings: Settings) -> None:
    assert settings.database_url is not None
    missing = make_url(settings.database_url).set(database="no_such_db").render_as_string(hide_password=False)
    code, _, err = await mailroom(settings, "migrate", env={"MAILROOM_DATABASE_URL": missing})
    assert code == 1
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("mailroom: database no_such_db does not exist on ")


async def test_an_unreachable_database_is_waited_for_then_reported(settings: Settings) -> None:
    code, _, err = await mailroom(
        settings,
        "migrate",
        env={"MAILROOM_DATABASE_URL": "postgresql://me@127.0.0.1:1/app", "MAILROOM_STARTUP_WAIT_SECONDS": "1"},
    )
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert last.startswith("mailroom: PostgreSQL is not reachable at postgresql://me@127.0.0.1:1/app after 1 s")
    assert "waiting_for_database" in err, "it waited, and said so"


async def test_unreachable_redis_is_one_line(settings: Settings) -> None:
    code, _, err = await mailroom(settings, "enqueue-test", "hi", env={"MAILROOM_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert code == 1
    assert one_line(err).startswith("mailroom: Redis is not reachable at redis://127.0.0.1:1/0")


async def test_debug_shows_the_traceback_too(settings: Settings) -> None:
    code, _, err = await mailroom(
        settings, "--debug", "enqueue-test", "hi", env={"MAILROOM_REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    assert code == 1
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("mailroom: Redis is not reachable")


async def test_a_password_in_a_url_is_never_printed(settings: Settings) -> None:
    code, _, err = await mailroom(
        settings,
        "-v",
        "enqueue-test",
        "hi",
        env={"MAILROOM_REDIS_URL": "redis://:hunter2-secret@127.0.0.1:1/0?password=other-secret"},
    )
    assert code == 1
    assert "hunter2-secret" not in err and "other-secret" not in err
    assert "redis://:***@127.0.0.1:1/0" in err


class TestSyncAgainstNylas:
    async def test_a_wrong_api_key_is_one_line(self, settings: Settings, fake_nylas: FakeNylas) -> None:
        code, _, err = await mailroom(settings, "sync", "--grant", "g1", env={"MAILROOM_NYLAS_API_KEY": "nyk_wrong"})
        assert code == 1
        assert "refused the API key (401): check MAILROOM_NYLAS_API_KEY" in one_line(err)

    async def test_nylas_unreachable_is_one_line(self, settings: Settings) -> None:
        code, _, err = await mailroom(
            settings, "sync", "--grant", "g1", env={"MAILROOM_NYLAS_API_URI": "http://127.0.0.1:1"}
        )
        assert code == 1
        assert one_line(err).startswith("mailroom: Nylas did not answer usefully at http://127.0.0.1:1")

    async def test_a_mistyped_grant_is_refused_and_not_remembered(
        self, settings: Settings, fake_nylas: FakeNylas
    ) -> None:
        fake_nylas.seed("demo-grant-1")
        code, _, err = await mailroom(settings, "sync", "--grant", "demo-grnat-1")
        assert code == 1
        assert "has no grant 'demo-grnat-1': check the id" in one_line(err)
        code, out, _ = await mailroom(settings, "inspect", "emails", "--json")
        assert out.strip() == "[]"
        assert [r.path for r in fake_nylas.requests] == ["/v3/grants/demo-grnat-1"], "no listing, nothing stored"

    async def test_a_second_sync_that_changed_nothing_reports_nothing_updated(
        self, settings: Settings, fake_nylas: FakeNylas
    ) -> None:
        fake_nylas.seed("demo-grant-1")
        code, out, err = await mailroom(settings, "sync", "--grant", "demo-grant-1", "--since", "2000-01-01")
        assert code == 0, err
        assert "5 new emails" in out
        code, out, err = await mailroom(settings, "sync", "--grant", "demo-grant-1", "--since", "2000-01-01")
        assert code == 0, err
        assert "0 new emails" in out
        assert "│     1 │      5 │   0 │       0 │" in out, out


async def test_api_warns_loudly_without_a_webhook_secret(settings: Settings) -> None:
    env = cli_env(settings) | {"MAILROOM_WEBHOOK_SECRETS": "", "MAILROOM_PORT": str(helpers.free_port())}
    process = await asyncio.create_subprocess_exec(
        MAILROOM, "api", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        first = (await asyncio.wait_for(process.stderr.readline(), timeout=30)).decode()
        assert first.startswith("warning: MAILROOM_WEBHOOK_SECRETS is not set: every webhook delivery will be refused")
    finally:
        await stop(process)


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL past 30 s. Twice in a loaded full run the API took longer than that to stop when
    signalled during its start-up (not reproduced alone, nor under CPU load): what it said meanwhile is kept in
    artifacts/api-slow-stop.log for whoever looks into it; the warning this test is about is asserted either way."""
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout=30)
    except TimeoutError:
        process.kill()
        said = await process.stderr.read() if process.stderr is not None else b""
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "api-slow-stop.log").write_bytes(said)
        await process.wait()


async def test_more_webhook_secrets_than_rotation_needs_are_refused(settings: Settings) -> None:
    """Each delivery's HMAC is computed under every secret: the list is for rotation, not an unbounded key ring."""
    secrets = ",".join(f"rotation-secret-{n:04d}" for n in range(5))
    code, _, err = await mailroom(settings, "stats", env={"MAILROOM_WEBHOOK_SECRETS": secrets})
    assert code == 2
    assert "MAILROOM_WEBHOOK_SECRETS: 5 secrets; at most 4" in one_line(err)
