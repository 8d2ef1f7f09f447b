"""Apply the Alembic migrations shipped in the `migrations` package to a database URL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

import migrations
from core.problems import CommandError, explain, redacted
from db.engine import create_engine, ping

log = structlog.get_logger(__name__)


def alembic_config(database_url: str, *, pgbouncer: bool = False) -> Config:
    config = Config()
    config.attributes["pgbouncer"] = pgbouncer  # read by migrations/env.py
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def wait_for_database(database_url: str, *, seconds: float, pgbouncer: bool = False) -> None:
    """Block until PostgreSQL accepts a connection (containers start in any order), or raise after `seconds`."""

    async def attempt() -> None:
        engine = create_engine(database_url, pool_size=1, max_overflow=0, connect_timeout=2.0, pgbouncer=pgbouncer)
        try:
            await ping(engine)
        finally:
            await engine.dispose()

    deadline = time.monotonic() + seconds
    while True:
        try:
            asyncio.run(attempt())
            return
        except (SQLAlchemyError, OSError) as exc:
            told = explain(exc, database_url=database_url)
            if told is not None and not told.startswith("PostgreSQL is not reachable"):
                # A missing database or a refused login does not heal by waiting.
                raise CommandError(told) from exc
            if time.monotonic() >= deadline:
                raise CommandError(
                    f"PostgreSQL is not reachable at {redacted(database_url)} after {seconds:.0f} s of trying "
                    f"(MAILROOM_STARTUP_WAIT_SECONDS): {type(exc).__name__}"
                ) from exc
            log.warning("mailroom.waiting_for_database", url=redacted(database_url), error=type(exc).__name__)
            time.sleep(1.0)


def upgrade(database_url: str, revision: str = "head", *, pgbouncer: bool = False) -> None:
    """Blocking (Alembic runs its own event loop): call it from a thread or before the app's loop starts."""
    command.upgrade(alembic_config(database_url, pgbouncer=pgbouncer), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
