"""Redis as managed services offer it: a password, an ACL user confined to mailroom's keys, TLS with a client
certificate. One URL (MAILROOM_REDIS_URL) reaches it from the API, the worker and the CLI alike."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.exceptions import AuthenticationError, NoPermissionError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from jobs.enqueue import queue_for
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.commands import mailroom
from tests.harness import api_in_process, drain
from tests.notifications import envelope, message, post
from tests.servers import make_certificates, redis_server

pytestmark = pytest.mark.slow

# The README's ACL: arq's keys are arq:* (fixed in arq 0.28), ours start with mailroom: (the queue name's default);
# no dangerous commands but INFO, which arq's worker runs once at start-up to log the server's version.
MAILROOM_ONLY = (
    "user default off\nuser mailroom on >s3cret resetkeys ~arq:* ~mailroom:* resetchannels +@all -@dangerous +info"
)


async def webhook_becomes_email(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Through the API (its queue client), a worker (arq's own pool) and the CLI (its client)."""
    async with api_in_process(settings) as client:
        assert (await post(client, envelope(message()))).status_code == 200
        checks = (await client.get("/readyz")).json()["checks"]
        assert checks["redis"] == "ok"
    await drain(settings)
    assert [e.message_id for e in await helpers.emails(sessionmaker)] == ["msg_1"]
    code, out, err = await mailroom(settings, "stats")
    assert code == 0 and "queued" in out, err


async def test_a_password_and_an_acl_user_confined_to_mailroom_keys(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas, tmp_path: Path
) -> None:
    fake_nylas.add_message(message())
    with redis_server(tmp_path / "redis", MAILROOM_ONLY) as server:
        url = f"redis://mailroom:s3cret@127.0.0.1:{server.port}/0"
        confined = settings.model_copy(update={"redis_url": url})
        await webhook_becomes_email(confined, sessionmaker)

        queue = queue_for(confined)
        try:
            with pytest.raises(NoPermissionError):
                await queue.set("someone-elses-key", b"1")
        finally:
            await queue.aclose()
        wrong = settings.model_copy(update={"redis_url": f"redis://mailroom:wrong@127.0.0.1:{server.port}/0"})
        queue = queue_for(wrong)
        try:
            with pytest.raises(AuthenticationError):
                await queue.ping()
        finally:
            await queue.aclose()
        code, _, err = await mailroom(wrong, "stats")
        assert code != 0 and "Redis" in err, err
    assert (tmp_path / "redis" / "redis.log").read_text().count("NOPERM") == 0


async def test_tls_with_a_client_certificate(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas, tmp_path: Path
) -> None:
    fake_nylas.add_message(message())
    certificates = make_certificates(tmp_path / "certificates")
    with redis_server(tmp_path / "redis", "requirepass s3cret", tls=certificates) as server:
        query = (
            f"ssl_ca_certs={certificates.ca}&ssl_certfile={certificates.client_cert}"
            f"&ssl_keyfile={certificates.client_key}&ssl_cert_reqs=required"
        )
        url = f"rediss://:s3cret@127.0.0.1:{server.port}/0?{query}"
        await webhook_becomes_email(settings.model_copy(update={"redis_url": url}), sessionmaker)

        without_certificate = f"rediss://:s3cret@127.0.0.1:{server.port}/0?ssl_ca_certs={certificates.ca}"
        queue = queue_for(settings.model_copy(update={"redis_url": without_certificate}))
        try:
            with pytest.raises(Exception, match=r"(?i)ssl|certificate|connection"):
                await queue.ping()
        finally:
            await queue.aclose()
