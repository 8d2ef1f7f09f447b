"""PostgreSQL over TLS, configured with libpq's URL parameters (sslmode, sslrootcert) as managed providers print
them: a server that refuses connections without TLS, and a certificate made for the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from arq.connections import ArqRedis
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from db.engine import create_engine, create_sessionmaker, ping
from db.webhook_events import listen_waiting
from mailroom.fake_nylas import FakeNylas, FakeNylasServer
from tests import helpers
from tests.commands import mailroom
from tests.harness import Servers, api_in_process, drain, make_settings
from tests.notifications import envelope, message, post
from tests.servers import Certificates, TcpPostgres, make_certificates, tcp_postgres

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("pg-certificates"))


@pytest.fixture(scope="module")
def tls_postgres(tmp_path_factory: pytest.TempPathFactory, certificates: Certificates) -> Iterator[TcpPostgres]:
    with tcp_postgres(tls=certificates) as server:
        yield server


def with_tls(url: str, query: str) -> str:
    return f"{url}?{query}"


async def connects(url: str) -> bool:
    engine = create_engine(url, pool_size=1, max_overflow=0, connect_timeout=5)
    try:
        await ping(engine)
        return True
    except (OperationalError, InterfaceError, DBAPIError, OSError):
        return False
    finally:
        await engine.dispose()


async def test_sslmode_decides_and_a_certificate_is_checked(
    tls_postgres: TcpPostgres, certificates: Certificates, tmp_path: Path
) -> None:
    url = tls_postgres.url
    assert not await connects(with_tls(url, "sslmode=disable")), "the server refuses connections without TLS"
    assert await connects(with_tls(url, "sslmode=require"))
    assert await connects(with_tls(url, f"sslmode=verify-full&sslrootcert={certificates.ca}"))
    by_name = url.replace("127.0.0.1", "localhost")
    assert await connects(with_tls(by_name, f"sslmode=verify-full&sslrootcert={certificates.ca}"))
    stranger = make_certificates(tmp_path / "another-ca", name="stranger")
    assert not await connects(with_tls(url, f"sslmode=verify-ca&sslrootcert={stranger.ca}")), "a CA we did not name"
    # libpq's rule: `require` with a root certificate verifies the chain.
    assert not await connects(with_tls(url, f"sslmode=require&sslrootcert={stranger.ca}"))


async def test_webhook_to_email_over_verified_tls(
    tls_postgres: TcpPostgres,
    certificates: Certificates,
    servers: Servers,
    redis: ArqRedis,
    fake_nylas_server: FakeNylasServer,
    fake_nylas: FakeNylas,
) -> None:
    url = with_tls(tls_postgres.url, f"sslmode=verify-full&sslrootcert={certificates.ca}")
    log_from = tls_postgres.log_size()
    settings = make_settings(database_url=url, redis_url=servers.redis_url, nylas_api_uri=fake_nylas_server.url)
    code, _, err = await mailroom(settings, "migrate")
    assert code == 0, err

    # The batch worker's LISTEN connection is asyncpg's own (not SQLAlchemy's): it reads the same parameters.
    listener = await listen_waiting(url, lambda *_: None, connect_timeout=5)
    await listener.close()

    fake_nylas.add_message(message())
    async with api_in_process(settings) as client:
        assert (await post(client, envelope(message()))).status_code == 200
    await drain(settings)

    engine = create_engine(url, pool_size=1)
    try:
        emails = await helpers.emails(create_sessionmaker(engine))
    finally:
        await engine.dispose()
    assert [e.message_id for e in emails] == ["msg_1"]
    assert tls_postgres.errors(after=log_from) == []
