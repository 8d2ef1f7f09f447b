"""Running the `mailroom` command from a test: in this process where the process boundary is not the point (fast),
or as a real process (signals, start-up, log lines on stderr, commands that run until stopped)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import structlog

from core.settings import Settings
from mailroom.cli import main

MAILROOM = str(Path(sys.executable).parent / "mailroom")


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment a user would set for these settings (the test's servers, fake Nylas and queue)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
    assert settings.database_url and settings.redis_url
    env.update(
        MAILROOM_DATABASE_URL=settings.database_url,
        MAILROOM_REDIS_URL=settings.redis_url,
        MAILROOM_QUEUE_NAME=settings.queue_name,
        MAILROOM_TEST_TASK_SLEEP="0.2",
        MAILROOM_LOG_FORMAT="json",
        MAILROOM_NYLAS_API_URI=settings.nylas_api_uri,
        MAILROOM_NYLAS_API_KEY=settings.nylas_api_key.get_secret_value(),
        MAILROOM_DATABASE_PGBOUNCER=str(settings.database_pgbouncer).lower(),
        MAILROOM_REDIS_SENTINELS=",".join(settings.redis_sentinels),
        MAILROOM_REDIS_SENTINEL_MASTER=settings.redis_sentinel_master,
    )
    if settings.migrations_database_url:
        env["MAILROOM_MIGRATIONS_DATABASE_URL"] = settings.migrations_database_url
    return env


async def mailroom(settings: Settings, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`mailroom ARGS` run by the CLI's own `main` in this process, with the test's settings (and `env` on top) as
    its environment: exit code, stdout, stderr. Runs on a thread, as the command runs its own event loop."""
    with _environment(cli_env(settings) | (env or {})), _logging_restored():
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = await asyncio.wait_for(asyncio.to_thread(_exit_code, list(args)), timeout=60)
    return code, stdout.getvalue(), stderr.getvalue()


def _exit_code(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exit:  # argparse's usage errors, inside the thread: asyncio would re-raise it in the loop
        return exit.code if isinstance(exit.code, int) else 2


async def mailroom_process(settings: Settings, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`mailroom ARGS` as a real process, as a user runs it: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        MAILROOM,
        *args,
        env=cli_env(settings) | (env or {}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return await process.wait(), stdout.decode(), stderr.decode()


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    """The command configures logging for itself (its level, a handler on its stderr); the test process gets its
    own configuration back."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        structlog.configure(**config)
        root.handlers, root.level = handlers, level
