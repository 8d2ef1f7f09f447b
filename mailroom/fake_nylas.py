"""A fake Nylas v3 API over real HTTP, for the real `nylas` SDK to talk to (checklist: shared/nylas.md §6).

It serves stored messages and grants, records every request, and answers with scripted faults on demand:
429 with Retry-After, JSON 5xx, an HTML 502, 401, 404, and slow answers. The tests and the benchmark use it, and
so can a newcomer: `mailroom dev --fake-nylas` runs one with a seeded mailbox per demo grant, and its fault switches
answer over HTTP under `/_fake/` (see README, "Nylas on the laptop").
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from mailroom import fake_webhooks as webhooks

API_KEY = "nyk_test_key"
DEMO_GRANTS = ("demo-grant-1", "demo-grant-2")


@dataclass
class Fault:
    """One scripted answer, used `times` times for requests whose path contains `path_contains`."""

    status: int
    times: int = 1
    path_contains: str = ""
    retry_after: float | None = None
    html: bool = False
    delay: float = 0.0


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    at: float
    client_port: int  # one per TCP connection: how many connections the SDK opened


@dataclass
class FakeNylas:
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    drafts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)
    grants: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The application's webhook destinations (/v3/webhooks), by id.
    webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency: float = 0.0
    # For benchmarks and soaks: any message asked for exists (made up from its id), this share of requests
    # answers 503, and requests are not recorded (a long run would keep them all).
    any_message: bool = False
    # When set, only these grants exist (others answer 404, as Nylas does for a mistyped grant id).
    known_grants: set[str] | None = None
    failure_rate: float = 0.0
    record: bool = True
    requests: list[RecordedRequest] = field(default_factory=list)
    _faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _random: random.Random = field(default_factory=lambda: random.Random(7))

    # --- what tests call -------------------------------------------------------------------------------------
    def add_message(self, message: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.messages[(message["grant_id"], message["id"])] = message
        return message

    def seed(self, grant_id: str, *, now: float | None = None) -> None:
        """A small mailbox for `grant_id` that exercises the default rules: a newsletter, a notification, an
        invoice, an urgent request (starred and answered with a draft) and a personal note."""
        self.known_grants = (self.known_grants or set()) | {grant_id}
        self.grants[grant_id] = {
            "id": grant_id,
            "provider": "google",
            "grant_status": "valid",
            "email": "me@example.com",
        }
        received = int(now if now is not None else time.time())
        for number, (sender, subject, extra) in enumerate(_SEED, start=1):
            message = made_up_message(grant_id, f"{grant_id}-msg-{number}")
            message.update(
                subject=subject,
                date=received - 60 * number,
                snippet=f"{subject} ({sender['email']})",
                body=f"<p>{subject}</p>",
            )
            message["from"] = [sender]
            message.update(extra)
            self.add_message(message)

    def add_webhook(self, url: str, *, status: str = "active", triggers: tuple[str, ...] = ("message.created",)) -> str:
        """A destination as if made in the Nylas dashboard; returns its id."""
        with self._lock:
            body = {"webhook_url": url, "trigger_types": list(triggers)}
            return str(webhooks.create(self.webhooks, body, webhook_id=f"wh_{next(self._ids)}", status=status)["id"])

    def set_webhook_status(self, webhook_id: str, status: str) -> None:
        """What Nylas does on its own: `failing` after 15 minutes of errors, `failed` after 72 hours."""
        with self._lock:
            self.webhooks[webhook_id].update(status=status, status_updated_at=int(time.time()))

    def fail(self, status: int, **kwargs: Any) -> None:
        with self._lock:
            self._faults.append(Fault(status=status, **kwargs))

    def requests_to(self, path_contains: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if path_contains in r.path]

    def reset(self) -> None:
        with self._lock:
            self.messages.clear()
            self.drafts.clear()
            self.sent.clear()
            self.grants.clear()
            self.requests.clear()
            self.webhooks.clear()
            self._faults.clear()
            self.latency = 0.0
            self.failure_rate = 0.0
            self.any_message = False
            self.known_grants = None

    # --- the HTTP side ---------------------------------------------------------------------------------------
    def app(self) -> Starlette:
        async def dispatch(request: Request) -> Response:
            # Ids come from the raw path: Starlette decodes %2F in `path`, and Nylas message ids may hold `/`.
            raw_path = request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0]
            segments = [unquote(s) for s in raw_path.strip("/").split("/")]
            with self._lock:
                if self.record:
                    self.requests.append(
                        RecordedRequest(
                            request.method,
                            request.url.path,
                            request.url.query,
                            dict(request.headers),
                            time.monotonic(),
                            request.client.port if request.client else 0,
                        )
                    )
                fault = self._take_fault(request.url.path)
                if fault is None and self.failure_rate and self._random.random() < self.failure_rate:
                    fault = Fault(status=503)
            if fault and fault.delay:
                await asyncio.sleep(fault.delay)
            # Re-read while waiting, so a test that lowers the latency releases requests already held.
            started = time.monotonic()
            while time.monotonic() - started < self.latency:  # noqa: ASYNC110 - a test changes latency from outside
                await asyncio.sleep(min(0.05, self.latency))
            if request.headers.get("authorization") != f"Bearer {API_KEY}":
                return _error(401, "api.authentication_error", "Unauthorized")
            if fault is not None:
                return _fault_response(fault)
            body = await request.json() if request.method in ("PUT", "POST") and await request.body() else {}
            if segments[:2] == ["v3", "grants"] and len(segments) > 2 and not self._grant_exists(segments[2]):
                return _error(404, "api.not_found_error", f"grant {segments[2]} not found")
            return self._route(request.method, segments, request, body)

        async def control(request: Request) -> Response:
            """The fault switches, for a person trying failures by hand (`curl -X POST …/_fake/fail`)."""
            if request.headers.get("authorization") != f"Bearer {API_KEY}":
                return _error(401, "api.authentication_error", "Unauthorized")
            body = await request.json() if await request.body() else {}
            return self._control(request.path_params["switch"], body)

        return Starlette(
            routes=[
                Route("/_fake/{switch}", control, methods=["GET", "POST"]),
                Route("/{path:path}", dispatch, methods=["GET", "PUT", "POST", "DELETE"]),
            ]
        )

    def _grant_exists(self, grant_id: str) -> bool:
        return self.known_grants is None or grant_id in self.known_grants

    def _control(self, switch: str, body: dict[str, Any]) -> Response:
        try:
            match switch:
                case "fail":
                    self.fail(int(body["status"]), **{k: v for k, v in body.items() if k != "status"})
                case "latency":
                    self.latency = float(body["seconds"])
                case "failure_rate":
                    self.failure_rate = float(body["rate"])
                case "message":
                    self.add_message({**made_up_message(body["grant_id"], body["id"]), **body})
                case "reset":
                    self.reset()
                case "webhook_status":
                    self.set_webhook_status(body["id"], body["status"])
                case "state":
                    pass
                case _:
                    return _error(404, "api.not_found_error", f"no switch {switch}")
        except (KeyError, TypeError, ValueError) as exc:
            return _error(400, "api.invalid_request_error", f"{switch}: {type(exc).__name__}: {exc}")
        with self._lock:
            state = {
                "messages": len(self.messages),
                "drafts": len(self.drafts),
                "sent": len(self.sent),
                "grants": sorted(self.known_grants) if self.known_grants is not None else "any",
                "latency": self.latency,
                "failure_rate": self.failure_rate,
                "faults": [vars(f) for f in self._faults],
                "requests": len(self.requests),
            }
        return JSONResponse(state)

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.path_contains in path:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _route(self, method: str, segments: list[str], request: Request, body: dict[str, Any]) -> Response:
        if segments[:2] == ["v3", "webhooks"]:
            with self._lock:
                code, answer = webhooks.route(self.webhooks, method, segments[2:], body, new_id=f"wh_{next(self._ids)}")
            return JSONResponse({"request_id": _request_id(), **answer}, status_code=code)
        match segments:
            case ["v3", "grants", grant_id, "messages", "send"] if method == "POST":
                return self._create(grant_id, body, sent=True)
            case ["v3", "grants", grant_id, "drafts"] if method == "POST":
                return self._create(grant_id, body, sent=False)
            case ["v3", "grants", grant_id, "drafts"] if method == "GET":
                return self._list_tagged(self.drafts, grant_id, request)
            case ["v3", "grants", grant_id, "messages", message_id] if method == "PUT":
                with self._lock:
                    message = self.messages.get((grant_id, message_id))
                    if message is None:
                        return _error(404, "api.not_found_error", f"message {message_id} not found")
                    message.update({k: v for k, v in body.items() if k in ("unread", "starred", "folders", "metadata")})
                    return _data(dict(message))
            case ["v3", "grants", grant_id] if method == "GET":
                grant = self.grants.get(grant_id, {"id": grant_id, "provider": "google", "grant_status": "valid"})
                return _data(grant)
            case ["v3", "grants", grant_id, "messages"] if method == "GET":
                return self._list_messages(grant_id, request)
            case ["v3", "grants", grant_id, "messages", message_id] if method == "GET":
                with self._lock:
                    message = self.messages.get((grant_id, message_id))
                    if message is None and self.any_message:
                        message = self.messages[(grant_id, message_id)] = made_up_message(grant_id, message_id)
                if message is None:
                    return _error(404, "api.not_found_error", f"message {message_id} not found")
                return _data(message)
        return _error(404, "api.not_found_error", f"no route for {method} /{'/'.join(segments)}")

    def _create(self, grant_id: str, body: dict[str, Any], *, sent: bool) -> Response:
        with self._lock:
            new_id = f"{'msg' if sent else 'draft'}_new_{next(self._ids)}"
            created = {**body, "id": new_id, "grant_id": grant_id, "object": "message" if sent else "draft"}
            if sent:
                self.sent.append(created)
            else:
                self.drafts[(grant_id, new_id)] = created
        return _data(created)

    def _list_tagged(self, store: dict[tuple[str, str], dict[str, Any]], grant_id: str, request: Request) -> Response:
        key, _, value = request.query_params.get("metadata_pair", "").partition(":")
        with self._lock:
            found = [d for (g, _), d in store.items() if g == grant_id and (d.get("metadata") or {}).get(key) == value]
        return JSONResponse({"request_id": _request_id(), "data": found, "next_cursor": None})

    def _list_messages(self, grant_id: str, request: Request) -> Response:
        params = request.query_params
        if "metadata_pair" in params:
            with self._lock:
                store = {(m["grant_id"], m["id"]): m for m in self.sent}
            return self._list_tagged(store, grant_id, request)
        limit = max(1, min(200, int(params.get("limit", "50"))))
        after = int(params.get("received_after", "0"))
        offset = int(params.get("page_token") or 0)
        with self._lock:
            found = [m for (g, _), m in self.messages.items() if g == grant_id and int(m.get("date", 0)) >= after]
        found.sort(key=lambda m: int(m.get("date", 0)), reverse=True)
        page = found[offset : offset + limit]
        next_cursor = str(offset + limit) if offset + limit < len(found) else None
        return JSONResponse({"request_id": _request_id(), "data": page, "next_cursor": next_cursor})


_SEED: list[tuple[dict[str, str], str, dict[str, Any]]] = [
    ({"email": "news@substack.com", "name": "Weekly Digest"}, "This week in email", {}),
    ({"email": "noreply@github.com", "name": "GitHub"}, "A new sign-in to your account", {}),
    ({"email": "billing@example.net", "name": "Acme Billing"}, "Invoice 2026-118 for November", {}),
    ({"email": "ana@example.org", "name": "Ana Lima"}, "Urgent: contract needs your signature", {}),
    ({"email": "bo@example.org", "name": "Bo Chen"}, "Lunch on Friday?", {"unread": False}),
]


def made_up_message(grant_id: str, message_id: str) -> dict[str, Any]:
    return {
        "object": "message",
        "id": message_id,
        "grant_id": grant_id,
        "thread_id": f"t-{message_id}",
        "subject": f"Message {message_id}",
        "from": [{"email": "sender@example.com", "name": "Sender"}],
        "to": [{"email": "me@example.com"}],
        "date": int(time.time()),
        "snippet": "A message made up by the fake Nylas",
        "body": "<p>A message made up by the fake Nylas</p>",
        "folders": ["INBOX"],
        "unread": True,
        "starred": False,
    }


def _request_id() -> str:
    return f"req_{time.monotonic_ns()}"


def _data(value: dict[str, Any]) -> Response:
    return JSONResponse({"request_id": _request_id(), "data": value})


def _error(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"request_id": _request_id(), "error": {"type": type_, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _fault_response(fault: Fault) -> Response:
    if fault.html:
        return HTMLResponse("<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=fault.status)
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
    kinds = {429: "api.rate_limit_error", 401: "api.authentication_error", 404: "api.not_found_error"}
    return _error(fault.status, kinds.get(fault.status, "api.internal_error"), f"injected {fault.status}", headers)


class FakeNylasServer:
    """Runs a FakeNylas on 127.0.0.1 in a thread of its own, like a remote API would be."""

    def __init__(self, fake: FakeNylas | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fake = fake or FakeNylas()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(
            self.fake.app(),
            log_config=None,
            access_log=False,
            lifespan="off",
            # Kept-alive SDK connections and requests held by `latency` must not keep a stopping fake alive.
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self) -> FakeNylasServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake Nylas did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


def main() -> None:
    """`python -m mailroom.fake_nylas --port P`: a fake Nylas in a process of its own (benchmarks measure its CPU)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--failure-rate", type=float, default=0.0, help="share of requests answered 503")
    args = parser.parse_args()
    fake = FakeNylas(latency=args.latency, any_message=True, failure_rate=args.failure_rate, record=False)
    config = uvicorn.Config(
        fake.app(),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        loop="uvloop",
        timeout_graceful_shutdown=1,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
