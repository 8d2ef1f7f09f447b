"""Behind PgBouncer in transaction pooling mode (MAILROOM_DATABASE_PGBOUNCER=true): webhooks become fetched,
classified, acted-upon email, the cron ticks once across two workers and keeps ticking, the sweeper and replay
work, and neither PostgreSQL nor PgBouncer logs an error."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

import asyncpg
import pytest
import structlog
from arq.connections import ArqRedis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from db.engine import create_engine, create_sessionmaker
from db.models import CronRun
from mailroom.fake_nylas import FakeNylas, FakeNylasServer
from tests import helpers
from tests.commands import mailroom
from tests.harness import Servers, api_in_process, drain, make_settings, sweep_ticking_on_two_workers
from tests.notifications import envelope, message, post, truncated
from tests.servers import PgBouncer, TcpPostgres, pgbouncer, tcp_postgres

pytestmark = pytest.mark.slow

SERVER_CONNECTIONS = 2


@pytest.fixture(scope="module")
def bounced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TcpPostgres, PgBouncer]]:
    with (
        tcp_postgres() as backend,
        pgbouncer(backend, pool_size=SERVER_CONNECTIONS) as bouncer,
    ):
        yield backend, bouncer


@pytest.fixture
def through_pgbouncer(
    bounced: tuple[TcpPostgres, PgBouncer], servers: Servers, redis: ArqRedis, fake_nylas_server: FakeNylasServer
) -> Settings:
    backend, bouncer = bounced
    return make_settings(
        database_url=bouncer.url,
        database_pgbouncer=True,
        migrations_database_url=backend.url,
        redis_url=servers.redis_url,
        nylas_api_uri=fake_nylas_server.url,
        db_pool_size=4,
    )


def logins(bouncer: PgBouncer) -> int:
    return bouncer.log.read_text().count("login attempt")


@pytest.fixture
async def bounced_sessions(
    through_pgbouncer: Settings, bounced: tuple[TcpPostgres, PgBouncer]
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    logins_before = logins(bounced[1])
    code, _, err = await mailroom(through_pgbouncer, "migrate")
    assert code == 0, err
    assert logins(bounced[1]) == logins_before, "migrations take the direct URL, past PgBouncer"
    assert through_pgbouncer.database_url is not None
    engine = create_engine(through_pgbouncer.database_url, pool_size=2, pgbouncer=True)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def test_the_rig_shares_few_server_connections_among_many_clients(
    bounced: tuple[TcpPostgres, PgBouncer],
) -> None:
    """What makes this PgBouncer a test of transaction pooling: four clients, two server connections."""
    _, bouncer = bounced
    clients = [await asyncpg.connect(bouncer.url, statement_cache_size=0) for _ in range(4)]
    try:
        pids = {await client.fetchval("SELECT pg_backend_pid()") for client in clients}
    finally:
        for client in clients:
            await client.close()
    assert len(pids) <= SERVER_CONNECTIONS


def database_trouble(logs: list[MutableMapping[str, Any]], caplog: pytest.LogCaptureFixture) -> list[str]:
    """What our logs (structlog) and arq's (logging) said about the database, and any error at all but `expected`."""
    return [str(e) for e in logs if "DatabaseError" in str(e) or "prepared statement" in str(e)] + [
        r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
    ]


@pytest.fixture
def captured() -> Iterator[list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs() as logs:
        yield logs


async def test_webhooks_to_actions_sweep_and_replay_behind_pgbouncer(
    through_pgbouncer: Settings,
    bounced: tuple[TcpPostgres, PgBouncer],
    bounced_sessions: async_sessionmaker[AsyncSession],
    fake_nylas: FakeNylas,
    redis: ArqRedis,
    captured: list[MutableMapping[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings, sessionmaker = through_pgbouncer, bounced_sessions
    backend, bouncer = bounced
    await helpers.truncate_all(sessionmaker)
    fetched = [message(grant_id=f"grant_{n % 2}", message_id=f"long{n}", subject=f"Urgent {n}") for n in range(6)]
    complete = [message(grant_id=f"grant_{n % 2}", message_id=f"short{n}", subject=f"Urgent {n}") for n in range(4)]
    for each in fetched + complete:
        fake_nylas.add_message(each)
    fake_nylas.add_message(message(message_id="flaky", subject="fails until replayed"))
    fake_nylas.fail(503, times=3, path_contains="/messages/flaky")

    async with api_in_process(settings) as client:
        for each in fetched:
            await post(client, envelope(truncated(each), type="message.created.truncated"))
        for each in complete:
            await post(client, envelope(each))
        flaky = await post(client, envelope(truncated(message(message_id="flaky")), type="message.created.truncated"))
        checks = (await client.get("/readyz")).json()["checks"]
        assert (checks["database"], checks["schema"]) == ("ok", "ok")
    await drain(settings)

    emails = await helpers.emails(sessionmaker)
    assert len(emails) == 10
    assert {e.pipeline_state for e in emails} == {"done"}, "classified and acted upon"
    assert all(fake_nylas.messages[(m["grant_id"], m["id"])]["starred"] for m in fetched + complete), "urgent: starred"
    assert [e.status for e in await helpers.events(sessionmaker)].count("dead") == 1

    code, out, err = await mailroom(settings, "replay", "--event", str(flaky.json()["event_id"]))
    assert code == 0 and "replayed 1 events" in out, err
    await drain(settings)
    assert {e.message_id for e in await helpers.emails(sessionmaker)} >= {"flaky"}

    # Stored while Redis was unreachable, with a job per event (no batch claim): the sweeper finds it.
    per_event = settings.model_copy(update={"batch_worker": False})
    async with api_in_process(per_event.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})) as client:
        assert (await post(client, envelope(message(message_id="orphan")))).json()["status"] == "received"
    swept = await helpers.sweep_now(per_event, redis)
    assert swept["events_requeued"] == 1, swept
    await drain(per_event)
    assert {e.status for e in await helpers.events(sessionmaker)} == {"processed"}
    assert len(await helpers.emails(sessionmaker)) == 12

    assert [e["event"] for e in captured if e["log_level"] == "error"] == ["event.dead"], "the flaky one, only"
    assert database_trouble(captured, caplog) == []
    assert backend.errors() == []
    assert bouncer.errors() == []


async def test_two_workers_tick_each_cron_once_and_keep_ticking_behind_pgbouncer(
    through_pgbouncer: Settings,
    bounced: tuple[TcpPostgres, PgBouncer],
    bounced_sessions: async_sessionmaker[AsyncSession],
    captured: list[MutableMapping[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A session-level advisory lock stays on whichever server connection took it and its unlock may run on
    another: the next tick would find it held and skip, and the ticks would stop."""
    settings, sessionmaker = through_pgbouncer, bounced_sessions
    backend, bouncer = bounced
    await helpers.truncate_all(sessionmaker)
    runs = (await sweep_ticking_on_two_workers(settings, sessionmaker, ticks=4, within=20)).runs
    seconds = [run.tick_at.timestamp() for run in runs]
    assert all(b - a == 1 for a, b in itertools.pairwise(seconds)), "each tick once, none skipped"
    assert all(run.finished_at is not None and run.error is None for run in runs[:-1])
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(CronRun)) == len(runs)
    assert [e for e in captured if e["log_level"] in ("warning", "error")] == []
    assert database_trouble(captured, caplog) == []
    assert backend.errors() == []
    assert bouncer.errors() == []
