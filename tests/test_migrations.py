"""The migrations build the schema the models describe, and run down and up again."""

from __future__ import annotations

import asyncio
import secrets

from alembic import command
from alembic.util.exc import CommandError
from sqlalchemy.engine import make_url

from core import migrate
from tests.harness import Servers, execute_on


async def test_upgrade_downgrade_upgrade_and_no_drift(servers: Servers) -> None:
    name = f"mailroom_migr_{secrets.token_hex(4)}"
    await execute_on(servers.database_url, f'CREATE DATABASE "{name}"')
    url = make_url(servers.database_url).set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        await asyncio.to_thread(migrate.downgrade, url, "base")
        await asyncio.to_thread(migrate.upgrade, url)
        # `alembic check` raises when the models and the migrated schema differ.
        await asyncio.to_thread(command.check, migrate.alembic_config(url))
    except CommandError as exc:  # pragma: no cover - the failure message is the point
        raise AssertionError(f"models and migrations differ: {exc}") from exc
    finally:
        await execute_on(servers.database_url, f'DROP DATABASE "{name}" WITH (FORCE)')
