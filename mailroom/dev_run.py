"""The one `mailroom dev` of a data folder, and what other commands on that folder may learn from it.

`dev` holds an exclusive lock on `<data>/dev.lock` for as long as it runs, and writes `<data>/dev.json` (mode 0600,
beside the embedded database that already holds the mail): its API URL, its webhook secret and, with `--fake-nylas`,
the fake Nylas's URL and key. A second `dev` on the folder is told that one runs; `send-test-webhook`, `sync` and
the other commands find dev's API and fake Nylas without being configured.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class DevInfo:
    pid: int
    api_url: str
    webhook_secret: str | None = None
    fake_nylas_url: str | None = None
    fake_nylas_key: str | None = None


class AlreadyRunning(Exception):
    """Another `mailroom dev` holds this data folder."""


class DevRun:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self._lock_file: IO[str] | None = None

    def claim(self) -> None:
        """Take the folder for this process, or raise AlreadyRunning naming the one that has it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        handle = (self.dir / "dev.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            other = read(self.dir)
            where = f" (pid {other.pid}, {other.api_url})" if other else ""
            raise AlreadyRunning(
                f"mailroom dev is already running on {self.dir}{where}; stop it first, "
                "or give this one another MAILROOM_DATA_DIR and MAILROOM_PORT"
            ) from None
        self._lock_file = handle

    def publish(self, info: DevInfo) -> None:
        path = self.dir / "dev.json"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(asdict(info), handle)

    def release(self) -> None:
        (self.dir / "dev.json").unlink(missing_ok=True)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def read(data_dir: Path) -> DevInfo | None:
    """The running dev's info for this folder, or None when no live dev is there."""
    try:
        raw = json.loads((data_dir / "dev.json").read_text())
        info = DevInfo(**raw)
    except (OSError, ValueError, TypeError):
        return None
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return info
