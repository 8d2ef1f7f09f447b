"""A newcomer's first hour, as the README tells it: `mailroom dev --fake-nylas` on its own embedded servers, then the
CLI in another terminal. Each test starts a real `mailroom dev` process on a data folder of its own."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from mailroom.embedded import SharedRedis
from mailroom.fake_nylas import API_KEY
from tests import helpers
from tests.commands import MAILROOM


@dataclass
class Dev:
    process: asyncio.subprocess.Process
    env: dict[str, str]
    url: str
    log: Path

    def banner_value(self, label: str) -> str:
        """What the start-up banner shows beside `label`, as a person reads it off the terminal."""
        for line in self.log.read_text().splitlines():
            if line.startswith("│") and label in line:  # the banner's box, not a log line that names the label
                return line.split(label, 1)[1].strip(" │").split()[0]
        raise AssertionError(f"no {label!r} in dev's output:\n{self.log.read_text()}")

    async def run(self, *args: str) -> tuple[int, str, str]:
        """`mailroom ARGS` in another terminal, in the same folder: no settings but the data folder."""
        process = await asyncio.create_subprocess_exec(
            MAILROOM, *args, env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
        return await process.wait(), stdout.decode(), stderr.decode()


def newcomer_env(data_dir: Path) -> dict[str, str]:
    """Nothing configured but where the data goes (and a free port, so tests can run side by side)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
    return env | {"MAILROOM_DATA_DIR": str(data_dir), "MAILROOM_PORT": str(helpers.free_port())}


@asynccontextmanager
async def mailroom_dev(tmp_path: Path, *args: str) -> AsyncIterator[Dev]:
    env = newcomer_env(tmp_path / "data")
    log = tmp_path / "dev.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            MAILROOM, "dev", *args, env=env, cwd=tmp_path, stdout=sink, stderr=sink
        )
    dev = Dev(process, env, f"http://127.0.0.1:{env['MAILROOM_PORT']}", log)
    try:
        async with httpx.AsyncClient(base_url=dev.url, timeout=10) as client:
            await helpers.until_answering(client, "/readyz", within=120, what="mailroom dev")
        await poll(lambda: "mailroom dev is running" in log.read_text(), what="the banner")
        yield dev
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), timeout=60)


async def poll(predicate: object, *, what: str, within: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = predicate() if callable(predicate) else predicate
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert asyncio.get_running_loop().time() < deadline, f"timed out after {within}s waiting for {what}"
        await asyncio.sleep(0.2)


async def stored_emails(dev: Dev) -> list[dict[str, object]]:
    code, out, err = await dev.run("inspect", "emails", "--json")
    assert code == 0, err
    return list(orjson.loads(out))


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_cli_commands_beside_dev_leave_its_servers_running(tmp_path: Path) -> None:
    """stats, enqueue-test, inspect, a second dev and a worker stopped with SIGTERM, all beside `mailroom dev`: dev
    still turns webhooks into emails and runs test jobs afterwards; its Redis stops only when dev stops."""
    async with mailroom_dev(tmp_path, "--fake-nylas") as dev:
        code, out, err = await dev.run("stats", "--json")
        assert code == 0, err
        code, out, err = await dev.run("enqueue-test", "first")
        assert code == 0, err
        code, out, err = await dev.run("inspect", "queued")
        assert code == 0, err

        code, out, err = await dev.run("dev")
        assert code == 1
        assert "mailroom dev is already running on" in err and dev.url in err
        assert "admin token" not in out, "a second dev prints no token for the first one's URL"

        worker = await asyncio.create_subprocess_exec(
            MAILROOM, "worker", env=dev.env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await poll(lambda: _workers(dev, 2), what="the second worker's heartbeat")
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), timeout=60) == 0, "arq's graceful stop on SIGTERM"

        code, out, err = await dev.run("send-test-webhook")
        assert code == 0, err
        assert '"status":"queued"' in out
        await poll(lambda: _email_done(dev), what="the email through classify and act")

        code, out, err = await dev.run("enqueue-test", "after the others")
        assert code == 0, err
        job_id = out.strip()
        await poll(lambda: _job_complete(dev, job_id), what="dev's worker to run the test job")
        redis_dir = SharedRedis(Path(dev.env["MAILROOM_DATA_DIR"]))
        assert redis_dir.users() == [dev.process.pid], "every command left; dev still uses its Redis"
    assert dev.process.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in dev.log.read_text()
    assert redis_dir.users() == [] and not redis_dir.socket.exists(), "the last user out stopped Redis"


async def _workers(dev: Dev, count: int) -> bool:
    code, out, _ = await dev.run("inspect", "workers", "--json")
    return code == 0 and len(orjson.loads(out)) == count


async def _email_done(dev: Dev) -> bool:
    return [(e["class"], e["state"]) for e in await stored_emails(dev)] == [("urgent", "done")]


async def _job_complete(dev: Dev, job_id: str) -> bool:
    code, out, _ = await dev.run("job", job_id)
    return code == 0 and orjson.loads(out)["status"] == "complete"


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_the_readme_walkthrough(tmp_path: Path) -> None:
    """The README in order: dev with the fake Nylas, Try it, a few CLI commands, the dashboard login, sync."""
    async with mailroom_dev(tmp_path, "--fake-nylas") as dev:
        token = dev.banner_value("admin token")
        fake_url = dev.banner_value("fake Nylas")
        assert dev.banner_value("dashboard") == f"{dev.url}/dashboard"

        # Try it: a truncated notification for a seeded message; the worker fetches it from the fake,
        # classifies it urgent, stars it and drafts a reply there.
        code, out, err = await dev.run("send-test-webhook")
        assert code == 0, err
        await poll(lambda: _email_done(dev), what="the email through classify and act")
        async with httpx.AsyncClient(base_url=fake_url, headers={"Authorization": f"Bearer {API_KEY}"}) as fake:
            state = (await fake.get("/_fake/state")).json()
        assert state["drafts"] == 1, "the urgent rule drafted a reply through the fake Nylas"

        code, out, err = await dev.run("stats")
        assert code == 0, err
        assert "queue" in out and err == "", "no log lines before a command's output"
        code, out, err = await dev.run("inspect", "dead")
        assert code == 0, err
        assert "dead (0)" in out

        async with httpx.AsyncClient(base_url=dev.url, timeout=10) as client:
            login = await client.post("/dashboard/login", data={"token": token})
            assert login.status_code == 303
            assert (await client.get("/dashboard")).status_code == 200
            assert (await client.get("/events")).status_code == 200, "the login cookie opens the admin API"

        code, out, err = await dev.run("sync", "--grant", "demo-grant-2", "--since", "2000-01-01")
        assert code == 0, err
        assert "5 new emails" in out
        code, out, err = await dev.run("sync", "--grant", "demo-grnat-2")
        assert code == 1
        assert "has no grant 'demo-grnat-2'" in err and "Traceback" not in err
        await poll(lambda: _all_done(dev, 6), what="the synced emails through the chain")
    assert dev.process.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in dev.log.read_text()


async def _all_done(dev: Dev, count: int) -> bool:
    found = await stored_emails(dev)
    return len(found) == count and all(e["state"] == "done" for e in found)
