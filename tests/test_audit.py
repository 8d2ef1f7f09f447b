"""The audit trail: every replay, purge and erasure that changed something, with who, what filter and how many
rows, and every refused sign-in; `mailroom audit` and GET /audit show it, the dashboard's overview carries it."""

from __future__ import annotations

import orjson
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from mailroom.fake_nylas import FakeNylas
from tests.commands import mailroom
from tests.harness import api_in_process, drain
from tests.notifications import envelope, message, post, truncated

TOKEN = "audit-admin-token-000001"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def dead_event(settings: Settings, fake_nylas: FakeNylas, message_id: str) -> int:
    fake_nylas.add_message(message(message_id=message_id))
    fake_nylas.fail(503, times=3, path_contains=f"/messages/{message_id}")
    async with api_in_process(settings) as client:
        answer = await post(
            client, envelope(truncated(message(message_id=message_id)), type="message.created.truncated")
        )
    await drain(settings)
    return int(answer.json()["event_id"])


async def test_cli_actions_are_audited_with_who_what_and_how_many(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    event_id = await dead_event(settings, fake_nylas, "dead1")
    code, _, err = await mailroom(settings, "replay", "--event", str(event_id), "--dry-run")
    assert code == 0, err
    code, out, _ = await mailroom(settings, "audit")
    assert code == 0 and "no operator actions recorded" in out, "a dry run changes nothing and is not an action"

    code, _, err = await mailroom(settings, "replay", "--event", str(event_id))
    assert code == 0, err
    async with api_in_process(settings) as client:
        await post(client, envelope(message(message_id="kept", subject="Lunch")))
    await drain(settings)
    code, out, err = await mailroom(settings, "erase", "--grant", "grant_1", "--yes")
    assert code == 0 and "erased" in out, (out, err)
    code, out, _ = await mailroom(settings, "audit", "--json")
    entries = orjson.loads(out)
    assert [(e["action"], e["rows"]) for e in entries][:2] == [("erase", entries[0]["rows"]), ("replay", 1)]
    assert entries[1]["filter"] == {"event_ids": [event_id]}
    assert entries[0]["filter"] == {"grant": "grant_1"} and entries[0]["rows"] >= 1
    assert all(e["who"].startswith("cli:") and "@" in e["who"] for e in entries)
    code, out, _ = await mailroom(settings, "audit", "--action", "replay")
    assert "replay rows=1" in out and "erase" not in out


async def test_admin_api_actions_and_refused_sign_ins_are_audited(settings: Settings, fake_nylas: FakeNylas) -> None:
    settings = settings.model_copy(update={"admin_token": SecretStr(TOKEN)})
    event_id = await dead_event(settings, fake_nylas, "dead2")
    async with api_in_process(settings) as client:
        counted = await client.post("/replay", headers=AUTH, json={"events": [event_id]})
        assert counted.json()["events"] == 1 and counted.json()["dry_run"] is True
        replayed = await client.post("/replay", headers=AUTH, json={"events": [event_id], "dry_run": False})
        assert replayed.json()["events"] == 1
        refused = await client.get("/audit", headers={"Authorization": "Bearer not-the-token"})
        assert refused.status_code == 401
        trail = (await client.get("/audit", headers=AUTH)).json()["entries"]
        overview = (await client.get("/api/overview", headers=AUTH)).json()["audit"]
    assert [(e["action"], e["who"]) for e in trail] == [
        ("sign_in_refused", "bearer@127.0.0.1"),
        ("replay", "token@127.0.0.1"),
    ], "the dry run is not there"
    assert trail[1]["filter"] == {"event_ids": [event_id]} and trail[1]["rows"] == 1
    assert overview == trail


async def test_a_purge_is_audited_with_what_it_dropped(settings: Settings) -> None:
    code, _, err = await mailroom(settings, "enqueue-test", "left in the queue")
    assert code == 0, err
    code, out, err = await mailroom(settings, "purge", "--yes")
    assert code == 0 and "purged 1 jobs" in out, (out, err)
    code, out, _ = await mailroom(settings, "audit", "--json")
    (entry,) = orjson.loads(out)
    assert (entry["action"], entry["rows"], entry["filter"]) == ("purge", 1, {"queue": settings.queue_name, "jobs": 1})
