"""The `mailroom` command, run as a user runs it: a real process against the test servers."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import orjson
import pytest
from arq.connections import ArqRedis

from core.settings import Settings
from mailroom.cli import build_parser
from tests import helpers
from tests.commands import MAILROOM, mailroom, mailroom_process
from tests.harness import make_settings


async def test_test_task_runs_through_the_cli(settings: Settings, redis: ArqRedis) -> None:
    """enqueue-test prints a job id; a worker runs it; `job` prints its status and result."""
    code, out, err = await mailroom(settings, "enqueue-test", "Hello")
    assert code == 0, err
    job_id = out.strip()
    assert job_id and "\n" not in job_id

    code, out, err = await mailroom(settings, "job", job_id)
    assert code == 0, err
    assert orjson.loads(out)["status"] == "queued"

    code, _, err = await mailroom_process(settings, "worker", "--burst")
    assert code == 0, err

    code, out, err = await mailroom(settings, "job", job_id)
    assert code == 0, err
    answer = orjson.loads(out)
    assert answer["status"] == "complete"
    assert answer["success"] is True
    assert answer["result"] == {"status": "completed", "message": "Hello"}
    assert answer["function"] == "test_task"


async def test_unknown_job_is_reported_as_not_found(settings: Settings, redis: ArqRedis) -> None:
    code, out, _ = await mailroom(settings, "job", "no-such-job")
    assert code == 1
    assert orjson.loads(out)["status"] == "not_found"


async def test_migrate_is_idempotent(settings: Settings) -> None:
    code, _, err = await mailroom(settings, "migrate")
    assert code == 0, err
    assert "Running upgrade" not in err, "the session database is already at head"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(commands.choices)


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_command_and_option_says_what_it_does(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`mailroom X --help` describes X and every one of its options and arguments."""
    sub = _subcommands()[command]
    assert sub.description, f"{command} has no description"
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, "--help"])
    assert exited.value.code == 0
    assert "usage: mailroom " + command in capsys.readouterr().out


def test_secrets_never_show_in_settings_repr() -> None:
    settings = make_settings(webhook_secrets="rotate-me-1,rotate-me-2", nylas_api_key="nyk_live_abc", admin_token="tok")
    shown = repr(settings) + str(settings.model_dump())
    for secret in ("rotate-me-1", "rotate-me-2", "nyk_live_abc", "tok'"):
        assert secret not in shown


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_the_first_readme_command_serves_and_processes_on_embedded_servers(tmp_path: Path) -> None:
    """`mailroom dev` with no servers configured: its own PostgreSQL and Redis, the API and a worker in one process;
    a signed webhook becomes an email, and SIGTERM stops it all without an error."""
    import httpx

    from mailroom.fake_nylas import API_KEY, FakeNylasServer
    from tests.notifications import SECRET, encode, envelope, message, truncated

    fake = FakeNylasServer().start()
    fake.fake.add_message(message(message_id="dev-1", subject="from the dev server"))
    port = helpers.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")} | {
        "MAILROOM_DATA_DIR": str(tmp_path / "data"),
        "MAILROOM_PORT": str(port),
        "MAILROOM_WEBHOOK_SECRETS": SECRET,
        "MAILROOM_NYLAS_API_URI": fake.url,
        "MAILROOM_NYLAS_API_KEY": API_KEY,
        "MAILROOM_ADMIN_TOKEN": "dev-token",
    }
    log = (tmp_path / "dev.log").open("wb")
    process = await asyncio.create_subprocess_exec(MAILROOM, "dev", env=env, cwd=tmp_path, stdout=log, stderr=log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await helpers.until_answering(client, "/readyz", within=120, what="mailroom dev")
            deadline = asyncio.get_running_loop().time() + 60
            from service.signatures import sign

            body = encode(envelope(truncated(message(message_id="dev-1")), type="message.created.truncated"))
            answer = await client.post(
                "/webhooks/nylas", content=body, headers={"x-nylas-signature": sign(SECRET, body)}
            )
            assert answer.json()["status"] == "queued"
            event_id = answer.json()["event_id"]
            auth = {"Authorization": "Bearer dev-token"}
            while (await client.get(f"/events/{event_id}", headers=auth)).json()["status"] != "processed":
                assert asyncio.get_running_loop().time() < deadline, "the event was never processed"
                await asyncio.sleep(0.1)
            detail = (await client.get(f"/events/{event_id}", params={"reveal": "true"}, headers=auth)).json()
            assert detail["email"]["subject"] == "from the dev server"
    finally:
        process.terminate()
        code = await asyncio.wait_for(process.wait(), timeout=60)
        fake.stop()
        log.close()
    assert code == 128 + 15, "stopped by SIGTERM, after a clean shutdown"
    assert "Traceback" not in (tmp_path / "dev.log").read_text()
