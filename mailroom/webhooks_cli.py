"""`mailroom webhooks list|create|rotate-secret|delete`: the application's webhook destinations at Nylas, through the
`nylas` SDK with MAILROOM_NYLAS_API_KEY, so setting up and rotating needs neither the Nylas dashboard nor a script.

A secret is printed once, when Nylas makes it (create, rotate-secret), with the value MAILROOM_WEBHOOK_SECRETS needs
for a rotation without downtime: the API accepts a delivery signed with any of its secrets.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from nylas import Client
from nylas.models.errors import NylasApiError, NylasSdkTimeoutError
from rich.console import Console

from core.problems import CommandError
from core.settings import Settings
from jobs.triggers import PROCESSED_TRIGGERS

out = Console(highlight=False, soft_wrap=True)
T = TypeVar("T")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(
        dest="action", required=True, metavar="ACTION", help="list, create, rotate-secret or delete"
    )
    actions.add_parser("list", help="the application's destinations: id, status, URL, triggers")
    create = actions.add_parser("create", help="create a destination (prints its secret once)")
    create.add_argument("--url", required=True, help="the public HTTPS URL of POST /webhooks/nylas")
    create.add_argument(
        "--trigger",
        action="append",
        dest="triggers",
        metavar="TRIGGER",
        help=f"a trigger, repeatable (default, what mailroom processes: {', '.join(PROCESSED_TRIGGERS)})",
    )
    create.add_argument("--description", help="shown in the Nylas dashboard")
    create.add_argument(
        "--notify", action="append", default=[], metavar="EMAIL", help="who Nylas tells when the destination fails"
    )
    rotate = actions.add_parser("rotate-secret", help="give a destination a new secret (printed once)")
    rotate.add_argument("id", help="the destination's id (`mailroom webhooks list`)")
    delete = actions.add_parser("delete", help="delete a destination: Nylas stops sending to it (asks for --yes)")
    delete.add_argument("id", help="the destination's id (`mailroom webhooks list`)")
    delete.add_argument("--yes", action="store_true", help="delete it (without: say what would be deleted)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    key = settings.nylas_api_key.get_secret_value()
    if not key:
        raise CommandError("no Nylas API key: set MAILROOM_NYLAS_API_KEY (the application's key)")
    client = Client(api_key=key, api_uri=settings.nylas_api_uri.rstrip("/"), timeout=int(settings.nylas_timeout))
    match args.action:
        case "list":
            return _list(client, settings)
        case "create":
            return _create(client, settings, args)
        case "rotate-secret":
            return _rotate(client, settings, args.id)
        case _:
            return _delete(client, settings, args.id, yes=args.yes)


def _list(client: Client, settings: Settings) -> int:
    destinations = _call(settings, lambda: client.webhooks.list().data)
    if not destinations:
        out.print("no webhook destinations: create one with `mailroom webhooks create --url https://…/webhooks/nylas`")
        return 0
    # One line each, never wrapped or cut: ids and URLs are copied from here.
    for each in destinations:
        triggers = ",".join(str(getattr(t, "value", t)) for t in each.trigger_types)
        line = f"{each.id}  {each.status:<7}  {each.webhook_url}  {triggers}"
        out.print(
            line + (f"  ({each.description})" if each.description else ""), markup=False, overflow="ignore", crop=False
        )
    return 0


def _create(client: Client, settings: Settings, args: argparse.Namespace) -> int:
    check_url(args.url)
    body: dict[str, Any] = {
        "webhook_url": args.url,
        "trigger_types": args.triggers or list(PROCESSED_TRIGGERS),
        "notification_email_addresses": args.notify,
    }
    if args.description:
        body["description"] = args.description
    created = _call(settings, lambda: client.webhooks.create(request_body=body).data)
    out.print(f"created webhook destination {created.id} -> {created.webhook_url} ({created.status})")
    _print_secret(created.webhook_secret, settings, first=True)
    return 0


def _rotate(client: Client, settings: Settings, destination: str) -> int:
    rotated = _call(settings, lambda: client.webhooks.rotate_secret(destination).data, destination=destination)
    out.print(f"new secret for webhook destination {rotated.id} -> {rotated.webhook_url}")
    _print_secret(rotated.webhook_secret, settings, first=False)
    return 0


def _delete(client: Client, settings: Settings, destination: str, *, yes: bool) -> int:
    found = _call(settings, lambda: client.webhooks.find(destination).data, destination=destination)
    if not yes:
        out.print(f"would delete {found.id} -> {found.webhook_url} ({found.status}); Nylas stops sending to it")
        out.print("run again with --yes to delete it")
        return 1
    _call(settings, lambda: client.webhooks.destroy(destination), destination=destination)
    out.print(f"deleted webhook destination {found.id} -> {found.webhook_url}")
    return 0


def _print_secret(secret: str, settings: Settings, *, first: bool) -> None:
    kept = len(settings.webhook_secrets)
    out.print(f"secret (shown once): {secret}", markup=False)
    if kept:
        value = f"{secret},<the {kept} secret{'s' if kept > 1 else ''} set now>"
        out.print(f"add it in front of the ones mailroom checks now: MAILROOM_WEBHOOK_SECRETS={value}", markup=False)
    else:
        out.print(f"set MAILROOM_WEBHOOK_SECRETS={secret}", markup=False)
    out.print(
        "then restart the API processes. Nylas signs with this secret from now on; a delivery refused until then "
        "(401) is retried by Nylas, so nothing is lost."
        + ("" if first else " Once every API process has the new one, drop the old secret from the list.")
    )


def check_url(url: str) -> None:
    """What Nylas refuses, said before asking it: it must reach the URL from the internet, over HTTPS."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not host:
        raise CommandError(f"{url}: Nylas sends webhooks only to https:// URLs reachable from the internet")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        local = host == "localhost" or host.endswith((".localhost", ".local", ".internal"))
    else:
        local = not address.is_global
    if local:
        raise CommandError(f"{url}: {host} is not reachable from the internet; Nylas refuses local addresses")
    if not parts.path.rstrip("/").endswith("/webhooks/nylas"):
        out.print(f"note: mailroom takes webhooks at /webhooks/nylas; {parts.path or '/'} must lead there")


def _call(settings: Settings, call: Callable[[], T], *, destination: str | None = None) -> T:
    """One SDK call, its failures said in one line a person can act on."""
    try:
        return call()
    except NylasApiError as exc:
        if exc.status_code in (401, 403):
            raise CommandError(
                f"Nylas refused the API key ({exc.status_code}): check MAILROOM_NYLAS_API_KEY (the application's key)"
            ) from None
        if exc.status_code == 404 and destination is not None:
            raise CommandError(
                f"no webhook destination {destination} in this application (`mailroom webhooks list`)"
            ) from None
        raise CommandError(f"Nylas refused it ({exc.status_code}): {exc}") from None
    except NylasSdkTimeoutError:
        raise CommandError(
            f"Nylas did not answer within {settings.nylas_timeout:g} s (MAILROOM_NYLAS_TIMEOUT)"
        ) from None
    except requests.RequestException as exc:
        raise CommandError(f"Nylas is not reachable at {settings.nylas_api_uri}: {type(exc).__name__}") from None
