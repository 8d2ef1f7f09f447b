"""`mailroom dev`: migrate, then the API and a worker in one process, optionally with a fake Nylas beside them.

Everything a newcomer needs to see at start-up is in one banner printed once the API answers: where webhooks go,
the dashboard and its token, the fake Nylas, and what to type next.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets

import structlog
from pydantic import SecretStr
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from core.settings import Settings
from mailroom.fake_nylas import API_KEY as FAKE_API_KEY
from mailroom.fake_nylas import DEMO_GRANTS, FakeNylas, FakeNylasServer

log = structlog.get_logger("mailroom")


def add_dev_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fake-nylas",
        action="store_true",
        help="also run a local fake Nylas API with a seeded mailbox for the grants "
        f"{', '.join(DEMO_GRANTS)}, and point the worker at it (no Nylas account needed)",
    )


def start_fake_nylas(port: int = 0) -> FakeNylasServer:
    fake = FakeNylas()
    for grant_id in DEMO_GRANTS:
        fake.seed(grant_id)
    return FakeNylasServer(fake, port=port).start()


def prepare(settings: Settings, *, fake: FakeNylasServer | None) -> tuple[Settings, list[str]]:
    """The settings dev runs with (a token, a webhook secret and the fake Nylas filled in where unset), and the
    notes for the banner about what was chosen for the user."""
    notes: list[str] = []
    update: dict[str, object] = {}
    if not settings.admin_token.get_secret_value():
        update["admin_token"] = SecretStr(secrets.token_urlsafe(16))
        notes.append("admin token made for this run: set MAILROOM_ADMIN_TOKEN to choose one")
    if not settings.webhook_secrets:
        made = secrets.token_urlsafe(16)
        update["webhook_secrets"] = [SecretStr(made)]
        notes.append(f"webhook secret made for this run: {made} (set MAILROOM_WEBHOOK_SECRETS to Nylas's)")
    if fake is not None:
        update["nylas_api_uri"] = fake.url
        update["nylas_api_key"] = SecretStr(FAKE_API_KEY)
    return settings.model_copy(update=update), notes


def banner(settings: Settings, *, token_chosen: bool, fake: FakeNylasServer | None, notes: list[str]) -> Panel:
    base = f"http://{settings.host}:{settings.port}"
    rows = Table.grid(padding=(0, 2))
    rows.add_column(style="bold")
    rows.add_column()
    rows.add_row("webhooks", f"{base}/webhooks/nylas")
    rows.add_row("dashboard", f"{base}/dashboard")
    token = settings.admin_token.get_secret_value()
    rows.add_row("admin token", "(yours, from MAILROOM_ADMIN_TOKEN)" if token_chosen else f"[bold green]{token}[/]")
    if fake is not None:
        rows.add_row("fake Nylas", f"{fake.url}  grants: {', '.join(DEMO_GRANTS)}")
    rows.add_row("try it", "mailroom send-test-webhook   (in another terminal, same folder)")
    rows.add_row("look", "mailroom stats · mailroom inspect dead · mailroom --help")
    rows.add_row("stop", "Ctrl-C")
    for note in notes:
        rows.add_row("note", note)
    return Panel(rows, title="mailroom dev is running", expand=False)


async def serve(settings: Settings, announce: Panel, out: Console) -> None:
    """API and worker in one process: uvicorn owns the signals and the worker stops when it does."""
    from jobs.worker import ResilientWorker
    from mailroom.api_server import api_server

    worker = ResilientWorker(settings, handle_signals=False)
    worker_task = asyncio.create_task(worker.run())
    server = api_server(settings)

    async def announce_when_up() -> None:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag to poll, no event to wait on
            await asyncio.sleep(0.05)
        out.print(announce)

    announcer = asyncio.create_task(announce_when_up())
    try:
        await server.serve()
    finally:
        announcer.cancel()
        await worker.close()
        with contextlib.suppress(asyncio.CancelledError):
            await worker_task
