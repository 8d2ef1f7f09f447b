"""Real servers in the shapes production runs them, started by a test and gone after it: PostgreSQL on TCP (with
TLS when asked), PgBouncer in transaction pooling mode, redis-server with a password, an ACL user, TLS, and under
Sentinel. Certificates are made with openssl for each run. Never the machine's shared servers."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # platformdirs, on import, when XDG_RUNTIME_DIR is unset
    from pgserver._commands import POSTGRES_BIN_PATH
    from pgserver.utils import ensure_user_exists


def need(program: str) -> str:
    """The program's path, or skip: CI installs every one of them (.ci/run), so there they always run."""
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (Debian: apt-get install {program}); CI installs it")
    return path


@dataclass(frozen=True)
class Certificates:
    """A CA, a server certificate for localhost and 127.0.0.1, and a client certificate, all signed by the CA."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"


def make_certificates(directory: Path, *, name: str = "ca") -> Certificates:
    """openssl, as an operator would run it: a throwaway CA signing a server and a client certificate."""
    need("openssl")
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=mailroom test {name}",
        "-keyout", "ca.key", "-out", "ca.pem",
    )  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for who, extra in (("server", ["-extfile", "san.ext"]), ("client", [])):
        request = ("-keyout", f"{who}.key", "-out", f"{who}.csr")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}", *request)
        openssl(
            "x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", f"{who}.pem", *extra,
        )  # fmt: skip
    return Certificates(directory)


def postgres_binaries(*, tls: bool) -> Path:
    """The machine's PostgreSQL programs (Debian's are built with SSL), else pgserver's (built without it)."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    if tls:
        pytest.skip("PostgreSQL over TLS needs a server built with SSL (Debian: apt-get install postgresql)")
    return Path(POSTGRES_BIN_PATH)


class TcpPostgres:
    """A PostgreSQL of its own listening on 127.0.0.1 only, with TLS required if asked: then a connection without
    TLS is refused by pg_hba, so a test that gets in proves it used TLS."""

    def __init__(self, *, tls: Certificates | None = None, config: str = "") -> None:
        self._bin = postgres_binaries(tls=tls is not None)
        # PostgreSQL refuses to run as root: as root, run it as a user of its own, in a folder that user owns.
        self._user = ensure_user_exists("pgserver").pw_name if os.geteuid() == 0 else None
        self._folder = Path(tempfile.mkdtemp(prefix="mailroom-postgres-"))
        self._folder.chmod(0o755)
        self.pgdata = self._folder / "data"
        self.log = self._folder / "postgres.log"
        if self._user is not None:
            shutil.chown(self._folder, self._user)
        self._run("initdb", "-D", str(self.pgdata), "--auth=trust", "-U", "postgres", "--encoding=utf8")
        if tls is not None:
            self._install_tls(tls)
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(config + "\n")
        self.port = free_port()
        options = f"-h 127.0.0.1 -p {self.port} -k {self._folder}"
        self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-o", options, "-l", str(self.log), "start")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([str(self._bin / program), *args], check=True, capture_output=True, user=self._user)

    def _install_tls(self, tls: Certificates) -> None:
        for source, name in ((tls.server_cert, "server.pem"), (tls.server_key, "server.key")):
            target = self.pgdata / name
            shutil.copy(source, target)
            target.chmod(0o600)
            if self._user is not None:
                shutil.chown(target, self._user)
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n")
        (self.pgdata / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n"
        )

    def log_size(self) -> int:
        return self.log.stat().st_size

    def errors(self, *, after: int = 0) -> list[str]:
        """ERROR and FATAL lines the server logged (past byte `after`): a clean run has none."""
        with self.log.open("rb") as log:
            log.seek(after)
            lines = log.read().decode(errors="replace").splitlines()
        return [line for line in lines if " ERROR: " in line or " FATAL: " in line]

    def cleanup(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-m", "fast", "stop")
        shutil.rmtree(self._folder, ignore_errors=True)


@contextlib.contextmanager
def tcp_postgres(*, tls: Certificates | None = None, config: str = "") -> Iterator[TcpPostgres]:
    server = TcpPostgres(tls=tls, config=config)
    try:
        yield server
    finally:
        server.cleanup()


@dataclass
class PgBouncer:
    url: str
    log: Path

    def errors(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if " ERROR " in line or " FATAL " in line]


@contextlib.contextmanager
def pgbouncer(backend: TcpPostgres, *, pool_size: int) -> Iterator[PgBouncer]:
    """Debian's PgBouncer in transaction pooling mode in front of `backend`, with fewer server connections than
    mailroom opens client connections, so consecutive transactions of one client land on different servers."""
    program = need("pgbouncer")
    # PgBouncer refuses to run as root and drops to another user: its files live where that user can read them.
    with tempfile.TemporaryDirectory(prefix="mailroom-pgbouncer-") as folder:
        directory = Path(folder)
        directory.chmod(0o755)
        port = free_port()
        (directory / "users.txt").write_text('"postgres" ""\n')
        (directory / "pgbouncer.ini").write_text(
            f"""[databases]
* = host=127.0.0.1 port={backend.port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "users.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 1000
"""
        )
        log = directory / "pgbouncer.log"
        command = [program, *(["-u", "nobody"] if os.geteuid() == 0 else []), str(directory / "pgbouncer.ini")]
        with log.open("wb") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, what="PgBouncer", process=process)
            yield PgBouncer(url=f"postgresql://postgres@127.0.0.1:{port}/postgres", log=log)
        finally:
            process.terminate()
            process.wait(timeout=10)


def wait_for_port(port: int, *, what: str, process: subprocess.Popen[bytes], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} is not listening on {port} after {within} s") from None
            time.sleep(0.05)


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@contextlib.contextmanager
def redis_server(directory: Path, config: str, *, tls: Certificates | None = None) -> Iterator[RedisServer]:
    """Debian's redis-server on a free port with `config` added (a password, ACL users, replicaof, …); with
    `tls`, it speaks only TLS and asks clients for a certificate signed by the same CA."""
    program = need("redis-server")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    listen = (
        f"port 0\ntls-port {port}\ntls-cert-file {tls.server_cert}\ntls-key-file {tls.server_key}\n"
        f"tls-ca-cert-file {tls.ca}\ntls-auth-clients yes\n"
        if tls is not None
        else f"port {port}\n"
    )
    conf = directory / "redis.conf"
    conf.write_text(f'bind 127.0.0.1\n{listen}save ""\nappendonly no\ndir {directory}\n{config}\n')
    with (directory / "redis.log").open("wb") as output:
        process = subprocess.Popen([program, str(conf)], stdout=output, stderr=subprocess.STDOUT)
    server = RedisServer(port=port, process=process, directory=directory)
    try:
        wait_for_port(port, what="redis-server", process=process)
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def redis_sentinel(directory: Path, *, master_port: int, master: str = "mymaster") -> Iterator[RedisServer]:
    """One Sentinel watching the master at `master_port` (quorum 1): it fails over within seconds when asked."""
    program = need("redis-server")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = directory / "sentinel.conf"  # Sentinel rewrites its own file as it learns the topology
    conf.write_text(
        f"bind 127.0.0.1\nport {port}\ndir {directory}\n"
        f"sentinel monitor {master} 127.0.0.1 {master_port} 1\n"
        f"sentinel down-after-milliseconds {master} 1000\n"
        f"sentinel failover-timeout {master} 5000\n"
    )
    with (directory / "sentinel.log").open("wb") as output:
        process = subprocess.Popen([program, str(conf), "--sentinel"], stdout=output, stderr=subprocess.STDOUT)
    server = RedisServer(port=port, process=process, directory=directory)
    try:
        wait_for_port(port, what="redis-sentinel", process=process)
        yield server
    finally:
        server.stop()
