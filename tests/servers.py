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
from typing import Any

import pytest

from tests.helpers import free_port

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # platformdirs, on import, when XDG_RUNTIME_DIR is unset
    import pgserver
    from pgserver._commands import pg_ctl


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


class TcpPostgres:
    """A PostgreSQL of its own (pgserver's binaries) listening on 127.0.0.1 only, with TLS required if asked:
    then a connection without TLS is refused by pg_hba, so a test that gets in proves it used TLS."""

    def __init__(self, directory: Path, *, tls: Certificates | None = None) -> None:
        self.pgdata = directory.resolve() / "pg"
        self._server: Any = pgserver.get_server(self.pgdata, cleanup_mode="delete")
        self._user = self._server.system_user
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._user)
        if tls is not None:
            self._install_tls(tls)
        self.port = free_port()
        self.log = self.pgdata / "tcp.log"
        options = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}"
        pg_ctl(["-w", "-o", options, "-l", str(self.log), "start"], pgdata=self.pgdata, user=self._user)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _install_tls(self, tls: Certificates) -> None:
        for source, name in ((tls.server_cert, "server.pem"), (tls.server_key, "server.key")):
            target = self.pgdata / name
            shutil.copy(source, target)
            target.chmod(0o600)
            if self._user is not None:
                shutil.chown(target, self._user, self._user)
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n")
        (self.pgdata / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n"
        )

    def errors(self) -> list[str]:
        """ERROR and FATAL lines the server logged: a clean run has none."""
        return [line for line in self.log.read_text().splitlines() if " ERROR: " in line or " FATAL: " in line]

    def cleanup(self) -> None:
        self._server.cleanup()


@contextlib.contextmanager
def tcp_postgres(directory: Path, *, tls: Certificates | None = None) -> Iterator[TcpPostgres]:
    server = TcpPostgres(directory, tls=tls)
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
