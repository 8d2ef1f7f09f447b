"""The chain process -> classify -> act, its timeline, and actions that never happen twice."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from arq.connections import ArqRedis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from db import stage_runs
from db.models import Action, Email
from jobs import arq_storage
from jobs.enqueue import enqueue_stage
from jobs.nylas_client import METADATA_KEY
from mailroom.fake_nylas import FakeNylas
from tests import helpers
from tests.harness import drain
from tests.notifications import envelope, message, post

Drain = Callable[[], Awaitable[None]]


async def actions_of(sessionmaker: async_sessionmaker[AsyncSession]) -> list[Action]:
    async with sessionmaker() as session:
        return list((await session.execute(select(Action).order_by(Action.id))).scalars())


async def test_chain_runs_to_the_end(
    api: httpx.AsyncClient, run_worker: Drain, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    """An urgent email is stored, classified `urgent`, starred, and answered with a draft, in that order."""
    fake_nylas.add_message(message(subject="URGENT: server down"))
    await post(api, envelope(message(subject="URGENT: server down")))

    await run_worker()

    (email,) = await helpers.emails(sessionmaker)
    assert (email.classification, email.pipeline_state, email.dead_at) == ("urgent", "done", None)
    async with sessionmaker() as session:
        timeline = await stage_runs.timeline(session, email_id=email.id, event_id=1)
    assert [(run.stage, run.status) for run in timeline] == [
        ("process", "succeeded"),
        ("classify", "succeeded"),
        ("act", "succeeded"),
    ]
    assert timeline[1].detail == {"class": "urgent", "rule": "urgent"}
    assert [(a.kind, a.status) for a in await actions_of(sessionmaker)] == [("star", "done"), ("draft_reply", "done")]
    assert fake_nylas.messages[("grant_1", "msg_1")]["starred"] is True
    (draft,) = fake_nylas.drafts.values()
    assert draft["subject"] == "Re: URGENT: server down"
    assert draft["reply_to_message_id"] == "msg_1"
    assert draft["to"] == [{"email": "Ana@Example.com", "name": "Ana"}]
    assert "Hi Ana," in draft["body"]
    assert METADATA_KEY in draft["metadata"]


async def test_rerun_after_success_sends_no_second_reply(
    api: httpx.AsyncClient,
    run_worker: Drain,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_nylas: FakeNylas,
    redis: ArqRedis,
) -> None:
    fake_nylas.add_message(message(subject="urgent please"))
    await post(api, envelope(message(subject="urgent please")))
    await run_worker()
    assert len(fake_nylas.drafts) == 1

    # A forced replay of the act stage (an operator's --force): every action is already done.
    await arq_storage.forget_result(redis, "act:1")
    assert await enqueue_stage(redis, "act", 1, force=True) is not None
    await run_worker()

    assert len(fake_nylas.drafts) == 1
    assert [a.status for a in await actions_of(sessionmaker)] == ["done", "done"]


async def test_crash_after_the_draft_was_created_does_not_draft_again(
    api: httpx.AsyncClient,
    run_worker: Drain,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_nylas: FakeNylas,
    redis: ArqRedis,
) -> None:
    """A worker that died between Nylas's answer and our commit left the action `executing`: maybe done.
    The re-run finds the draft by its metadata tag instead of creating a second one."""
    fake_nylas.add_message(message(subject="urgent"))
    await post(api, envelope(message(subject="urgent")))
    await run_worker()
    async with sessionmaker() as session, session.begin():
        await session.execute(update(Action).where(Action.kind == "draft_reply").values(status="executing"))
        await session.execute(update(Email).values(pipeline_state="act"))
    lookups_before = len(fake_nylas.requests_to("/drafts"))

    await arq_storage.forget_result(redis, "act:1")
    await enqueue_stage(redis, "act", 1)
    await run_worker()

    assert len(fake_nylas.drafts) == 1
    assert len(fake_nylas.requests_to("/drafts")) == lookups_before + 1, "one lookup, no second create"
    draft_action = next(a for a in await actions_of(sessionmaker) if a.kind == "draft_reply")
    assert draft_action.status == "done"
    assert draft_action.result == {"id": next(iter(fake_nylas.drafts.values()))["id"]}


async def test_dry_run_records_without_calling_nylas(
    settings: Settings,
    api: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_nylas: FakeNylas,
) -> None:
    await post(api, envelope(message(subject="Your invoice")))

    await drain(settings.model_copy(update={"actions_dry_run": True}))

    ((kind, status, result),) = [(a.kind, a.status, a.result) for a in await actions_of(sessionmaker)]
    assert (kind, status) == ("star", "dry_run")
    assert result == {"would": {}}
    assert fake_nylas.requests == []


async def test_newsletter_is_labelled_and_marked_read(
    api: httpx.AsyncClient, run_worker: Drain, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    weekly = message(subject="This week", headers=[{"name": "List-Unsubscribe", "value": "<mailto:u@x.com>"}])
    fake_nylas.add_message(weekly)
    await post(api, envelope(weekly))

    await run_worker()

    (email,) = await helpers.emails(sessionmaker)
    assert email.classification == "newsletter"
    stored = fake_nylas.messages[("grant_1", "msg_1")]
    assert stored["folders"] == ["INBOX", "Newsletters"]
    assert stored["unread"] is False


async def job_ids_by_stage(sessionmaker: async_sessionmaker[AsyncSession]) -> list[tuple[str, str, str | None]]:
    async with sessionmaker() as session:
        timeline = await stage_runs.timeline(session, email_id=1, event_id=1)
    # A batch's label (host, pid, number) or a batch job's id: "batch" stands for either.
    return [(run.stage, run.status, _batch_or(run.job_id)) for run in timeline]


def _batch_or(job_id: str | None) -> str | None:
    return "batch" if job_id and job_id.startswith(("batch:", "process_events:")) else job_id


async def test_later_stages_run_inline_in_the_job_that_stored_the_email(
    api: httpx.AsyncClient, run_worker: Drain, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    fake_nylas.add_message(message(subject="URGENT: server down"))
    await post(api, envelope(message(subject="URGENT: server down")))

    await run_worker()

    assert await job_ids_by_stage(sessionmaker) == [
        ("process", "succeeded", "batch"),
        ("classify", "succeeded", "batch"),
        ("act", "succeeded", "batch"),
    ]


async def test_an_inline_stage_that_must_retry_is_retried_as_its_own_job(
    api: httpx.AsyncClient, run_worker: Drain, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    """Starring answers 503 once: the act try is recorded, and the retry is the `act` job, not the process job again."""
    fake_nylas.add_message(message(subject="URGENT: server down"))
    fake_nylas.fail(503, path_contains="/messages/msg_1")
    await post(api, envelope(message(subject="URGENT: server down")))

    await run_worker()

    assert await job_ids_by_stage(sessionmaker) == [
        ("process", "succeeded", "batch"),
        ("classify", "succeeded", "batch"),
        ("act", "retrying", "batch"),
        ("act", "succeeded", "act:1"),
    ]
    (email,) = await helpers.emails(sessionmaker)
    assert email.pipeline_state == "done"
    assert [(a.kind, a.status) for a in await actions_of(sessionmaker)] == [("star", "done"), ("draft_reply", "done")]


async def test_without_inline_chaining_the_act_stage_is_a_job_of_its_own(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    fake_nylas.add_message(message(subject="URGENT: server down"))
    await post(api, envelope(message(subject="URGENT: server down")))

    await drain(settings.model_copy(update={"chain_inline": False}))

    # Classify is part of the batch that stored the email (a function of the message, no call to make).
    assert await job_ids_by_stage(sessionmaker) == [
        ("process", "succeeded", "batch"),
        ("classify", "succeeded", "batch"),
        ("act", "succeeded", "act:1"),
    ]


async def test_two_notifications_of_one_message_at_once_draft_one_reply(
    settings: Settings, api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas
) -> None:
    """Both jobs reach the act stage together (Nylas is slow); only one may run it."""
    fake_nylas.add_message(message(subject="URGENT: server down"))
    fake_nylas.latency = 0.3
    await post(api, envelope(message(subject="URGENT: server down"), notification_id="first", time=1000))
    updated = envelope(
        message(subject="URGENT: server down"), type="message.updated", notification_id="then", time=1001
    )
    await post(api, updated)

    await drain(settings)

    assert len(fake_nylas.drafts) == 1
    (email,) = await helpers.emails(sessionmaker)
    assert email.pipeline_state == "done"
