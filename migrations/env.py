"""Alembic environment: async engine, URL from the Alembic config or MAILROOM_DATABASE_URL."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from db.engine import create_engine
from db.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("MAILROOM_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: set MAILROOM_DATABASE_URL or run `mailroom migrate`")
    return url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_engine(
        _url(),
        pool_size=1,
        max_overflow=0,
        application_name="mailroom-migrate",
        pgbouncer=bool(config.attributes.get("pgbouncer")),
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
