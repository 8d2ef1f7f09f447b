"""Ordinary mistakes, said in one line: what the `mailroom` command prints instead of a traceback.

A user who mistypes a URL, points at a database that does not exist or gives a wrong Nylas key needs to know which
setting to fix, not twenty frames of SQLAlchemy. `--debug` (or MAILROOM_LOG_LEVEL=DEBUG) still shows the traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.exceptions
from pydantic import ValidationError


class CommandError(Exception):
    """A command could not do what was asked; the message is the whole story, for a person."""


# SQLSTATEs a person can fix in the URL or on the server (PostgreSQL's errcodes appendix).
_SQLSTATE_HINTS = {
    "3D000": "database {database} does not exist on {where}: create it (createdb {database}) or fix "
    "MAILROOM_DATABASE_URL",
    "28P01": "PostgreSQL at {where} refused the password for user {user}: check MAILROOM_DATABASE_URL",
    "28000": "PostgreSQL at {where} refused user {user}: check MAILROOM_DATABASE_URL and pg_hba.conf",
    "42501": "PostgreSQL refused the operation for user {user} (insufficient privilege): grant it or use another user",
}
_SECRET_PARAMETERS = frozenset({"password", "pass", "passwd", "secret", "token", "key", "api_key"})


def redacted(url: str) -> str:
    """A URL for logs and messages: the password (in the authority or as a query parameter) replaced by ***."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    secret_params = any(k.lower() in _SECRET_PARAMETERS for k, _ in pairs)
    if parts.password is None and not secret_params:
        return url  # untouched: urlunsplit would also turn unix:///path into unix:/path
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@" + netloc.rsplit("@", 1)[1]
    query = urlencode([(k, "***" if k.lower() in _SECRET_PARAMETERS else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__


def _database_parts(database_url: str | None) -> dict[str, str]:
    if not database_url:
        return {"database": "?", "where": "?", "user": "?"}
    parts = urlsplit(database_url)
    host = parts.hostname or "localhost"
    return {
        "database": parts.path.lstrip("/") or "?",
        "where": f"{host}:{parts.port or 5432}" if not host.startswith("/") else host,
        "user": parts.username or "?",
    }


def explain(exc: BaseException, *, database_url: str | None = None, redis_url: str | None = None) -> str | None:
    """One line for a mistake a person can fix, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, CommandError):
        return str(exc)
    if isinstance(exc, ValidationError):
        return settings_error(exc)
    for link in _chain(exc):
        code = getattr(link, "sqlstate", None)
        if isinstance(code, str) and code in _SQLSTATE_HINTS:
            return _SQLSTATE_HINTS[code].format(**_database_parts(database_url))
    for link in _chain(exc):
        if isinstance(link, redis.exceptions.AuthenticationError):
            return f"Redis at {redacted(redis_url or '?')} refused the password: check MAILROOM_REDIS_URL"
        if isinstance(link, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            return f"Redis is not reachable at {redacted(redis_url or '?')}: is it running? ({link})"
    for link in _chain(exc):
        if isinstance(link, OSError | TimeoutError) and database_url:
            return f"PostgreSQL is not reachable at {_database_parts(database_url)['where']}: is it running? ({link})"
    return None


def settings_error(exc: ValidationError) -> str:
    """pydantic's report, one line per wrong setting, named as the environment variable a user sets."""
    lines = []
    for error in exc.errors():
        name = "MAILROOM_" + "_".join(str(part) for part in error["loc"]).upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{name}: {message}")
    return "; ".join(lines) or str(exc)


MIN_SECRET_LENGTH = 16
# Values that ship in examples and templates: a deployment that still has one is open to anyone who read them.
_PLACEHOLDERS = ("change-me", "changeme", "change_me", "replace-me", "replaceme", "your-", "example", "placeholder")


def weak_secrets(webhook_secrets: list[str], admin_token: str) -> list[str]:
    """Why each configured webhook secret or admin token is unfit outside `mailroom dev` (an empty token is allowed:
    it turns the admin surface off)."""
    found: list[tuple[str, str]] = [("MAILROOM_WEBHOOK_SECRETS", secret) for secret in webhook_secrets]
    if admin_token:
        found.append(("MAILROOM_ADMIN_TOKEN", admin_token))
    problems = []
    for variable, value in found:
        lowered = value.lower()
        if any(marker in lowered for marker in _PLACEHOLDERS):
            problems.append(f"{variable}: a placeholder value, not a secret; set a random one (openssl rand -hex 24)")
        elif len(value) < MIN_SECRET_LENGTH:
            problems.append(
                f"{variable}: {len(value)} characters; use at least {MIN_SECRET_LENGTH} (openssl rand -hex 24)"
            )
    return problems
