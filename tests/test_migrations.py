"""The migrations build the schema the models describe, and run down and up again."""

from __future__ import annotations

import asyncio
import re
import secrets
from enum import StrEnum

import pytest
from alembic import command
from alembic.util.exc import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from core import migrate
from db.engine import create_engine
from db.states import (
    ActionStatus,
    DestinationStatus,
    EventStatus,
    GrantStatus,
    PipelineState,
    Stage,
    StageRunStatus,
)
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


@pytest.mark.parametrize(
    ("table", "constraint", "states"),
    [
        ("webhook_events", "ck_webhook_events_status", EventStatus),
        ("grants", "ck_grants_status", GrantStatus),
        ("emails", "ck_emails_pipeline_state", PipelineState),
        ("stage_runs", "ck_stage_runs_stage", Stage),
        ("stage_runs", "ck_stage_runs_status", StageRunStatus),
        ("actions", "ck_actions_status", ActionStatus),
        ("webhook_destinations", "ck_webhook_destinations_status", DestinationStatus),
    ],
)
async def test_the_migrated_check_constraints_allow_exactly_the_named_states(
    engine: AsyncEngine, table: str, constraint: str, states: type[StrEnum]
) -> None:
    """The code's vocabularies (db/states.py) and the database's CHECK constraints name the same states."""
    async with engine.connect() as connection:
        definition = await connection.scalar(
            text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = :name"), {"name": constraint}
        )
    assert definition is not None, f"{table} has no {constraint}"
    assert set(re.findall(r"'([a-z_]+)'::text", definition)) == {state.value for state in states}
