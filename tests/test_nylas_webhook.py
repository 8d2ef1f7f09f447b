"""The webhook edge: challenge, verification, refusals that write nothing, storage and enqueue."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import httpx
import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from tests import helpers
from tests.harness import make_settings, running_api
from tests.notifications import SECRET, encode, envelope, message, post

EMPTY = {"webhook_events": 0, "emails": 0, "grants": 0}


async def assert_nothing_written(sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis) -> None:
    assert await helpers.row_counts(sessionmaker) == EMPTY
    assert await helpers.queued_job_ids(redis) == []


class TestChallenge:
    async def test_echoes_the_challenge_as_bare_text(self, api: httpx.AsyncClient) -> None:
        """Nylas activates a destination only if the GET answers 200 with exactly the challenge value."""
        response = await api.get("/webhooks/nylas", params={"challenge": "a1b2-c3_d4+e5/f6=="})
        assert response.status_code == 200
        assert response.text == "a1b2-c3_d4+e5/f6=="
        assert response.headers["content-type"].startswith("text/plain")

    async def test_a_challenge_that_is_not_a_token_is_not_echoed(self, api: httpx.AsyncClient) -> None:
        """The GET is unsigned: echoing any text would make the webhook URL a reflector for whatever a link says."""
        for value in ("<script>alert(1)</script>", "a b", "x" * 513, ""):
            response = await api.get("/webhooks/nylas", params={"challenge": value})
            assert response.status_code == 400, value
            assert value not in response.text or not value

    async def test_missing_challenge_is_a_clear_400(self, api: httpx.AsyncClient) -> None:
        response = await api.get("/webhooks/nylas")
        assert response.status_code == 400
        assert response.json()["error"] == "missing_challenge"


class TestAccepted:
    async def test_valid_notification_is_stored_then_queued(
        self, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
    ) -> None:
        payload = envelope(message(), notification_id="evt_ok")
        response = await post(api, payload)

        assert response.status_code == 200
        (event,) = await helpers.events(sessionmaker)
        assert response.json() == {"status": "queued", "event_id": event.id}
        assert (event.notification_id, event.type, event.grant_id, event.object_id) == (
            "evt_ok",
            "message.created",
            "grant_1",
            "msg_1",
        )
        assert event.status == "received", "waiting in PostgreSQL for a batch worker's claim"
        assert event.payload == payload
        assert event.notified_at.timestamp() == payload["time"]
        assert await helpers.queued_job_ids(redis) == [], "the batch workers need no job in Redis"

    async def test_signature_header_is_matched_case_insensitively_and_with_sha256_prefix(
        self, api: httpx.AsyncClient
    ) -> None:
        from service.signatures import sign

        raw = encode(envelope(message()))
        headers = {"X-Nylas-Signature": "sha256=" + sign(SECRET, raw).upper()}
        response = await post(api, body=raw, secret=None, headers=headers)
        assert response.status_code == 200

    async def test_duplicate_delivery_is_one_event_waiting_once(
        self, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
    ) -> None:
        """Nylas retries with the same notification id; the second delivery is answered 200 and adds nothing."""
        first = await post(api, envelope(message(), notification_id="evt_dup", attempt=1))
        again = await post(api, envelope(message(), notification_id="evt_dup", attempt=2))

        assert first.json()["status"] == "queued"
        assert again.status_code == 200
        assert again.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
        assert [e.status for e in await helpers.events(sessionmaker)] == ["received"]
        assert await helpers.queued_job_ids(redis) == []

    async def test_unprocessed_type_is_stored_as_ignored_and_not_queued(
        self, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
    ) -> None:
        """A 4xx would push Nylas toward marking the destination failing, so unknown types get a 200."""
        payload = envelope({"object": "event", "id": "ev_1", "grant_id": "grant_1"}, type="event.created")
        response = await post(api, payload)

        assert response.status_code == 200
        assert response.json()["status"] == "ignored"
        (event,) = await helpers.events(sessionmaker)
        assert event.status == "ignored"
        assert await helpers.queued_job_ids(redis) == []

    async def test_rotated_secrets_both_verify(
        self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> None:
        """While rotating, the old and the new secret are both configured and both accepted."""
        rotating = settings.model_copy(
            update={"webhook_secrets": make_settings(webhook_secrets="new,old").webhook_secrets}
        )
        async with running_api(rotating) as client:
            assert (await post(client, envelope(message()), secret="old")).status_code == 200
            assert (await post(client, envelope(message()), secret="new")).status_code == 200
            assert (await post(client, envelope(message()), secret=SECRET)).status_code == 401
        assert len(await helpers.events(sessionmaker)) == 2

    async def test_gzip_delivery_is_verified_on_the_compressed_bytes(
        self, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> None:
        compressed = gzip.compress(encode(envelope(message(), notification_id="evt_gz")))
        response = await post(api, body=compressed, headers={"content-encoding": "gzip"})

        assert response.status_code == 200
        (event,) = await helpers.events(sessionmaker)
        assert event.notification_id == "evt_gz"

    async def test_string_time_is_accepted(
        self, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> None:
        """The Nylas CLI sends RFC 3339 times; the docs say integers. Both are read, neither refused."""
        payload = envelope(message())
        payload["time"] = "2024-08-16T15:26:25Z"
        assert (await post(api, payload)).status_code == 200
        (event,) = await helpers.events(sessionmaker)
        assert event.notified_at.timestamp() == 1723821985


class TestRefused:
    async def test_wrong_signature_is_401_and_writes_nothing(
        self, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
    ) -> None:
        response = await post(api, envelope(message()), secret="not-the-secret")
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_signature"
        await assert_nothing_written(sessionmaker, redis)

    async def test_missing_signature_is_401_and_writes_nothing(
        self, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
    ) -> None:
        response = await post(api, envelope(message()), secret=None)
        assert response.status_code == 401
        await assert_nothing_written(sessionmaker, redis)

    async def test_signature_over_other_bytes_is_401(
        self, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
    ) -> None:
        """Re-serialised JSON is not the body Nylas signed."""
        payload = envelope(message())
        response = await post(api, payload, signed_body=encode(payload) + b" ")
        assert response.status_code == 401
        await assert_nothing_written(sessionmaker, redis)

    async def test_gzip_signed_over_the_decompressed_bytes_is_401(
        self, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
    ) -> None:
        raw = encode(envelope(message()))
        response = await post(api, body=gzip.compress(raw), signed_body=raw, headers={"content-encoding": "gzip"})
        assert response.status_code == 401
        await assert_nothing_written(sessionmaker, redis)

    async def test_broken_json_is_400_and_writes_nothing(
        self, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
    ) -> None:
        response = await post(api, body=b'{"type": "message.created", "id": ')
        assert response.status_code == 400
        assert response.json()["error"] == "malformed_body"
        await assert_nothing_written(sessionmaker, redis)

    async def test_broken_gzip_is_400_and_writes_nothing(
        self, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
    ) -> None:
        response = await post(api, body=b"\x1f\x8bnot gzip at all", headers={"content-encoding": "gzip"})
        assert response.status_code == 400
        await assert_nothing_written(sessionmaker, redis)

    async def test_unknown_content_encoding_is_415(
        self, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
    ) -> None:
        response = await post(api, envelope(message()), headers={"content-encoding": "br"})
        assert response.status_code == 415
        await assert_nothing_written(sessionmaker, redis)

    @pytest.mark.parametrize(
        ("path", "field"),
        [
            (("id",), "id"),
            (("type",), "type"),
            (("data",), "data"),
            (("data", "object"), "data.object"),
            (("data", "object", "id"), "data.object.id"),
            (("data", "object", "grant_id"), "data.object.grant_id"),
        ],
    )
    async def test_missing_field_is_422_naming_it(
        self,
        api: httpx.AsyncClient,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: ArqRedis,
        path: tuple[str, ...],
        field: str,
    ) -> None:
        payload = envelope(message())
        container = payload
        for key in path[:-1]:
            container = container[key]
        del container[path[-1]]

        response = await post(api, payload)

        assert response.status_code == 422
        assert response.json()["error"] == "invalid_notification"
        assert f"missing field: {field}" in response.json()["detail"]
        await assert_nothing_written(sessionmaker, redis)

    async def test_grant_notification_without_grant_id_is_422(
        self, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
    ) -> None:
        response = await post(api, envelope({"code": 25009}, type="grant.expired"))
        assert response.status_code == 422
        assert "data.object.grant_id" in response.json()["detail"]
        await assert_nothing_written(sessionmaker, redis)

    async def test_older_guides_shape_is_refused_with_an_explanation(
        self, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
    ) -> None:
        """`{"trigger", "grant_id", "object_data"}` is neither v2 nor v3."""
        legacy = {"trigger": "message.created", "grant_id": "grant_1", "object_data": {"id": "msg_1"}}
        response = await post(api, legacy)
        assert response.status_code == 422
        assert "missing field: type" in response.json()["detail"]
        assert "trigger" in response.json()["detail"]
        await assert_nothing_written(sessionmaker, redis)

    async def test_json_that_is_not_an_object_is_422(
        self, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
    ) -> None:
        response = await post(api, [envelope(message())])
        assert response.status_code == 422
        await assert_nothing_written(sessionmaker, redis)

    async def test_oversized_body_is_413_and_writes_nothing(
        self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
    ) -> None:
        small = settings.model_copy(update={"max_body_bytes": 2048})
        payload = envelope(message(body="x" * 4096))
        async with running_api(small) as client:
            response = await post(client, payload)
        assert response.status_code == 413
        assert response.json()["error"] == "body_too_large"
        await assert_nothing_written(sessionmaker, redis)

    async def test_oversized_chunked_body_without_length_is_413(
        self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
    ) -> None:
        """A body sent without Content-Length is counted as it streams in, and cut off at the limit."""
        small = settings.model_copy(update={"max_body_bytes": 2048})
        raw = encode(envelope(message(body="x" * 4096)))

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(raw), 512):
                yield raw[start : start + 512]

        async with running_api(small) as client:
            from service.signatures import sign

            response = await client.post(
                "/webhooks/nylas", content=chunks(), headers={"x-nylas-signature": sign(SECRET, raw)}
            )
        assert response.status_code == 413
        await assert_nothing_written(sessionmaker, redis)

    async def test_gzip_bomb_is_413_and_writes_nothing(
        self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
    ) -> None:
        """Small on the wire, huge inflated: refused without inflating past the limit."""
        limited = settings.model_copy(update={"max_decompressed_bytes": 64 * 1024})
        bomb = gzip.compress(b'{"id": "' + b"a" * (50 * 1024 * 1024) + b'"}')
        assert len(bomb) < settings.max_body_bytes
        async with running_api(limited) as client:
            response = await post(client, body=bomb, headers={"content-encoding": "gzip"})
        assert response.status_code == 413
        await assert_nothing_written(sessionmaker, redis)

    async def test_no_configured_secret_refuses_everything(
        self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], redis: ArqRedis
    ) -> None:
        """With no secret nothing can be verified; 503 makes Nylas retry once the operator fixes it."""
        async with running_api(settings.model_copy(update={"webhook_secrets": []})) as client:
            response = await post(client, envelope(message()))
        assert response.status_code == 503
        assert response.json()["error"] == "not_configured"
        await assert_nothing_written(sessionmaker, redis)


async def test_nul_characters_are_stored_without_them(
    api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """PostgreSQL's JSONB refuses U+0000; keeping it would make every Nylas retry a 503 (found by the fuzzer)."""
    response = await post(api, envelope(message(subject="a\u0000b", **{"x\u0000": "y"})))
    assert response.status_code == 200
    (event,) = await helpers.events(sessionmaker)
    assert event.payload["data"]["object"]["subject"] == "ab"
    assert "x" in event.payload["data"]["object"]
