"""Schema-driven fuzzing of the HTTP API from its OpenAPI description (schemathesis), against a running `mailroom api`:
no answer is a 5xx, every answer matches the description, and admin routes hold without the token."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.openapi import SPEC
from tests import helpers
from tests.commands import MAILROOM, cli_env
from tests.harness import Servers, make_settings
from tests.notifications import SECRET, encode, envelope, message

TOKEN = "schema-test-admin-token"
schema = schemathesis.openapi.from_dict(SPEC)


@schema.auth()
class AdminToken:
    """The admin token, as the description's bearer scheme says; schemathesis also tries requests without it."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:  # type: ignore[type-arg]
        return TOKEN

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:  # type: ignore[type-arg]
        case.headers["Authorization"] = f"Bearer {data}"


@pytest.fixture(scope="module")
def live_api(database_url: str, servers: Servers) -> Iterator[str]:
    """A real API process on the test database, with a few events stored for the fuzzer to find."""
    port = helpers.free_port()
    settings_ = make_settings(database_url=database_url, redis_url=servers.redis_url)
    env = cli_env(settings_) | {
        "MAILROOM_PORT": str(port),
        "MAILROOM_ADMIN_TOKEN": TOKEN,
        "MAILROOM_WEBHOOK_SECRETS": SECRET,
        "MAILROOM_LOG_LEVEL": "WARNING",
        # The fuzzer sends hundreds of deliberately wrong tokens from one address; the lockout they would trip has
        # its own test (tests/test_security.py).
        "MAILROOM_AUTH_FAILURES_PER_MINUTE": "1000000",
    }
    process = subprocess.Popen([MAILROOM, "api"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.05)
        from service.signatures import sign

        for n in range(3):
            body = encode(envelope(message(message_id=f"schema-{n}"), notification_id=f"schema-evt-{n}"))
            httpx.post(f"{base}/webhooks/nylas", content=body, headers={"x-nylas-signature": sign(SECRET, body)})
        yield base
    finally:
        process.terminate()
        process.wait(30)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_to_its_description(case: schemathesis.Case, live_api: str) -> None:  # type: ignore[type-arg]
    # /readyz answers a documented 503 while no worker runs (none does here); everywhere else a 5xx is a bug.
    excluded: list[CheckFunction] = [not_a_server_error] if case.path == "/readyz" else []
    if case.path == "/replay":
        # JSON Schema cannot say `since` < `until`; a backwards range is a documented 400, not a schema breach.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(base_url=live_api, excluded_checks=excluded)
