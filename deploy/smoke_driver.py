"""Drives the container smoke test (deploy/smoke.sh) with the standard library only: waits for readiness, posts
signed notifications (every tenth one twice), stops a worker half-way, and checks PostgreSQL has every email once."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request


def get(url: str, token: str | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def post(url: str, secret: str, payload: dict[str, object]) -> int:
    body = json.dumps(payload).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        url, data=body, headers={"content-type": "application/json", "x-nylas-signature": signature}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def sql(psql: str, query: str) -> str:
    return subprocess.run([*shlex.split(psql), query], check=True, capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("url", "secret", "token", "psql", "stop-worker"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--count", type=int, default=400)
    args = parser.parse_args()

    began = time.monotonic()
    deadline = began + 240
    while True:  # compose under podman does not wait for health: poll readiness (migrated, worker alive)
        try:
            status, body = get(f"{args.url}/readyz")
            if status == 200:
                break
        except (urllib.error.URLError, ConnectionError, OSError):
            body = {}
        if time.monotonic() > deadline:
            print(f"not ready after 240 s: {body}", file=sys.stderr)
            return 1
        time.sleep(1)
    print(f"ready after {time.monotonic() - began:.1f} s")

    now = int(time.time())
    sent = acknowledged = 0
    stop_at = args.count // 2
    post_started = time.monotonic()
    for n in range(args.count):
        payload = {
            "specversion": "1.0",
            "type": "message.created",
            "source": "/google/emails/realtime",
            "id": f"smoke-evt-{n}",
            "time": now,
            "webhook_delivery_attempt": 1,
            "data": {
                "application_id": "smoke",
                "object": {
                    "object": "message",
                    "id": f"smoke-msg-{n}",
                    "grant_id": f"grant-{n % 5}",
                    "subject": f"hello {n}",
                    "from": [{"email": "sender@example.com"}],
                    "date": now,
                    "body": "<p>hi</p>",
                    "folders": ["INBOX"],
                },
            },
        }
        for _ in range(2 if n % 10 == 0 else 1):
            sent += 1
            acknowledged += post(f"{args.url}/webhooks/nylas", args.secret, payload) == 200
        if n == stop_at:
            print("stopping worker 1 with SIGTERM (graceful) while the queue is full")
            subprocess.Popen(shlex.split(args.stop_worker), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    post_seconds = time.monotonic() - post_started
    print(f"posted {sent} deliveries ({args.count} distinct) in {post_seconds:.1f} s, {acknowledged} answered 200")

    drain_started = time.monotonic()
    while True:
        done = int(sql(args.psql, "SELECT count(*) FROM emails WHERE pipeline_state = 'done'") or 0)
        if done >= args.count or time.monotonic() - drain_started > 180:
            break
        time.sleep(1)
    events = sql(args.psql, "SELECT status, count(*) FROM webhook_events GROUP BY status ORDER BY 1")
    emails = int(sql(args.psql, "SELECT count(*) FROM emails"))
    distinct = int(sql(args.psql, "SELECT count(DISTINCT (grant_id, message_id)) FROM emails"))
    print(f"drained in {time.monotonic() - drain_started:.1f} s; events by status: {events.replace(chr(10), ', ')}")
    print(
        f"sent={sent} acknowledged={acknowledged} emails={emails} distinct={distinct} done={done} "
        f"lost={args.count - distinct} duplicated={emails - distinct}"
    )
    ok = acknowledged == sent and emails == distinct == args.count and done == args.count
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
