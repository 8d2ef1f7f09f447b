"""The migrations build the schema the models describe, and run down and up again."""

from __future__ import annotations

import asyncio
import secrets

from alembic import command
from alembic.util.exc import CommandError
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from core import migrate
from db.engine import create_engine
from tests.harness import Servers, execute_on


async def test_upgrade_downgrade_upgrade_and_no_drift(servers: Servers) -> None:
    name = f"mailroom_migr_{secrets.token_hex(4)}"
    await execute_on(servers.database_url, f'CREATE DATABASE "{name}"')
    url = make_url(servers.database_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url, pool_size=1)
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        assert await migrate.current_revision(engine) == migrate.head_revision()
        assert await tables(engine) >= TABLES

        await asyncio.to_thread(migrate.downgrade, url, "base")
        assert await migrate.current_revision(engine) is None
        assert not TABLES & await tables(engine), "downgrade to base drops every table"

        await asyncio.to_thread(migrate.upgrade, url)
        assert await migrate.current_revision(engine) == migrate.head_revision()
        # `alembic check` raises when the models and the migrated schema differ.
        try:
            await asyncio.to_thread(command.check, migrate.alembic_config(url))
        except CommandError as exc:
            raise AssertionError(f"models and migrations differ: {exc}") from exc
    finally:
        await engine.dispose()
        await execute_on(servers.database_url, f'DROP DATABASE "{name}" WITH (FORCE)')


TABLES = {"webhook_events", "emails", "grants", "stage_runs", "actions", "cron_runs"}


async def tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
