"""`mailroom send-test-webhook`: post one signed notification to a running mailroom, the way Nylas does.

Beside `mailroom dev` it needs no options: dev's data folder says where its API is, which secret it checks and
whether a fake Nylas runs (then the notification is a truncated one for a seeded message, so the worker fetches it,
classifies it and acts on it through the fake).
"""

from __future__ import annotations

import argparse
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import orjson
from rich.console import Console

from core.problems import CommandError
from core.settings import Settings
from mailroom import dev_run
from mailroom.fake_nylas import DEMO_GRANTS
from service.signatures import sign


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="the webhook URL (default: the running `mailroom dev`'s, else MAILROOM_HOST:MAILROOM_PORT)"
    )
    parser.add_argument("--grant", default=DEMO_GRANTS[0], help=f"the grant id (default: {DEMO_GRANTS[0]})")
    parser.add_argument(
        "--message",
        help="the message id (default: the seeded urgent message of the grant when dev runs a fake Nylas, "
        "else a new id)",
    )
    parser.add_argument(
        "--type",
        dest="kind",
        choices=[
            "message.created",
            "message.updated",
            "message.created.truncated",
            "message.deleted",
            "grant.expired",
            "grant.updated",
            "grant.deleted",
        ],
        help="the notification type (default: message.created.truncated with a fake Nylas, else message.created "
        "carrying the whole message, so no Nylas call is needed)",
    )


def notification(kind: str, grant_id: str, message_id: str) -> dict[str, Any]:
    now = int(time.time())
    message: dict[str, Any] = {
        "object": "message",
        "id": message_id,
        "grant_id": grant_id,
        "subject": "Hello from mailroom send-test-webhook",
        "from": [{"name": "Ana", "email": "ana@example.com"}],
        "to": [{"email": "me@example.com"}],
        "date": now,
        "snippet": "Hi",
        "body": "<p>Hi</p>",
        "folders": ["INBOX"],
        "unread": True,
    }
    if kind == "message.created.truncated":
        message.pop("body")
    if kind == "message.deleted":
        message = {"id": message_id, "grant_id": grant_id, "object": "message"}
    if kind.startswith("grant."):
        # What Nylas sends for a grant: its id and provider, no message (`--message` does not apply).
        message = {"grant_id": grant_id, "code": 25009, "integration_id": "mailroom-test", "provider": "google"}
    return {
        "specversion": "1.0",
        "type": kind,
        "source": "/google/emails/realtime",
        "id": f"evt_test_{uuid.uuid4().hex[:12]}",
        "time": now,
        "webhook_delivery_attempt": 1,
        "data": {"application_id": "mailroom-send-test-webhook", "object": message},
    }


def run(settings: Settings, args: argparse.Namespace) -> int:
    out = Console(highlight=False, soft_wrap=True)
    dev = dev_run.read(settings.data_dir)
    url = args.url or (dev.api_url if dev else f"http://{settings.host}:{settings.port}") + "/webhooks/nylas"
    secret = settings.webhook_secrets[0].get_secret_value() if settings.webhook_secrets else None
    if secret is None and dev is not None:
        secret = dev.webhook_secret
    if secret is None:
        raise CommandError("no webhook secret to sign with: set MAILROOM_WEBHOOK_SECRETS (the API checks that one)")
    fake = dev is not None and dev.fake_nylas_url is not None
    kind = args.kind or ("message.created.truncated" if fake else "message.created")
    message_id = args.message or (f"{args.grant}-msg-4" if fake else f"msg_test_{uuid.uuid4().hex[:12]}")
    body = orjson.dumps(notification(kind, args.grant, message_id))
    request = urllib.request.Request(
        url, data=body, headers={"content-type": "application/json", "x-nylas-signature": sign(secret, body)}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status, text = answer.status, answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as refused:
        status, text = refused.code, refused.read().decode("utf-8", "replace")
    except (OSError, ValueError) as exc:
        raise CommandError(f"no answer from {url}: is mailroom running? ({exc})") from exc
    about = args.grant if kind.startswith("grant.") else f"{args.grant}/{message_id}"
    out.print(f"{kind} for {about} -> {url}: {status} {text}", markup=False)
    if status >= 300:
        raise CommandError(f"the API refused the notification ({status})")
    return 0
