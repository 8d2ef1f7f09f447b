"""One trace per notification, across processes: the API's request, the enqueue, the worker's processing of it with
its queue wait, the Nylas fetch (the HTTP request, with its URL), the SQL, classify and act; log lines carry the
trace id. Spans go over OTLP/HTTP to a local receiver, configured by the standard OTEL_* variables only."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.settings import Settings
from mailroom.fake_nylas import FakeNylas
from tests import helpers, notifications
from tests.commands import MAILROOM, cli_env
from tests.notifications import envelope, message, post, truncated
from tests.otlp_receiver import ReceivedSpan, otlp_receiver

pytestmark = pytest.mark.slow

SERVER, CLIENT = 2, 3


def one_notifications_trace(traces: dict[str, list[ReceivedSpan]]) -> tuple[str, list[ReceivedSpan]] | None:
    for trace_id, spans in traces.items():
        services = {s.service for s in spans}
        names = {s.name for s in spans}
        fetched = [s for s in spans if s.kind == CLIENT and "/messages/msg_urgent" in str(s.attributes)]
        if {"mailroom-api", "mailroom-worker"} <= services and "mailroom.act" in names and fetched:
            return trace_id, spans
    return None


async def test_one_trace_from_webhook_to_action_across_the_api_and_the_worker(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], fake_nylas: FakeNylas, tmp_path: Path
) -> None:
    urgent = message(message_id="msg_urgent", subject="Urgent: sign today")
    fake_nylas.add_message(urgent)
    port = helpers.free_port()
    with otlp_receiver() as receiver:
        env = cli_env(settings) | {
            "MAILROOM_PORT": str(port),
            "MAILROOM_WEBHOOK_SECRETS": notifications.SECRET,
            "MAILROOM_LOG_FORMAT": "json",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        worker_log = tmp_path / "worker.log"
        with worker_log.open("wb") as log_file:
            api = await asyncio.create_subprocess_exec(MAILROOM, "api", env=env, stderr=asyncio.subprocess.DEVNULL)
            worker = await asyncio.create_subprocess_exec(MAILROOM, "worker", env=env, stderr=log_file)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                await helpers.until_answering(client, "/readyz", within=60, what="the API with a live worker")
                answer = await post(client, envelope(truncated(urgent), type="message.created.truncated"))
                assert answer.status_code == 200
            deadline = time.monotonic() + 30
            found = None
            while found is None:
                assert time.monotonic() < deadline, f"no complete trace; got {sorted({s.name for s in receiver.spans})}"
                await asyncio.sleep(0.2)
                found = one_notifications_trace(receiver.traces())
        finally:
            for process in (api, worker):
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), timeout=30)

    trace_id, spans = found
    by_name = {s.name: s for s in spans}
    request = [s for s in spans if s.service == "mailroom-api" and s.kind == SERVER]
    assert request and not request[0].parent_span_id, "the webhook request is the trace's root"
    assert "mailroom.enqueue" in by_name
    processing = by_name["mailroom.process_event"]
    assert processing.service == "mailroom-worker" and processing.attributes["mailroom.queue_wait_s"] >= 0
    assert any(s.service == "mailroom-worker" and s.attributes.get("db.system") == "postgresql" for s in spans), "SQL"
    assert any(trace_id in s.links for s in receiver.spans if s.name == "mailroom.store_batch"), "the batch's writes"
    (email,) = await helpers.emails(sessionmaker)
    assert email.pipeline_state == "done"
    logged = [orjson.loads(line) for line in worker_log.read_bytes().splitlines() if line.startswith(b"{")]
    assert any(line.get("trace_id") == trace_id for line in logged), "the worker's log lines carry the trace id"
