"""Engine and sessionmaker factories; callers own what these return and dispose of it."""

from __future__ import annotations

import ssl
import uuid
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def async_url(url: str) -> URL:
    """Accept the usual ``postgresql://`` spellings and select the asyncpg driver."""
    parsed = make_url(url)
    if parsed.drivername in {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed


# libpq's TLS parameters, as managed PostgreSQL providers print them in their connection strings. asyncpg reads
# them from a DSN of its own but SQLAlchemy hands it keyword arguments, so they become asyncpg's `ssl` here.
_LIBPQ_TLS = ("sslmode", "sslrootcert", "sslcert", "sslkey")


def tls_options(url: URL) -> tuple[URL, dict[str, Any]]:
    """The URL without libpq's TLS parameters, and the asyncpg `ssl` argument they stand for (libpq's meanings:
    `require` with a root certificate verifies the chain as `verify-ca` does; `verify-full` checks the host name)."""
    given = {key: str(url.query[key]) for key in _LIBPQ_TLS if key in url.query}
    if not given:
        return url, {}
    url = url.difference_update_query(_LIBPQ_TLS)
    mode = given.get("sslmode", "prefer")
    root, cert, key = given.get("sslrootcert"), given.get("sslcert"), given.get("sslkey")
    if mode == "disable":
        return url, {"ssl": False}
    verify = mode in ("verify-ca", "verify-full") or (mode == "require" and root is not None)
    if not verify and cert is None:
        return url, {"ssl": mode}  # allow, prefer, require: asyncpg's own handling of these modes
    context = ssl.create_default_context(cafile=root)
    context.check_hostname = mode == "verify-full"
    if not verify:
        context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(cert, key)
    return url, {"ssl": context}


def _unique_statement_name() -> str:
    return f"__mailroom_{uuid.uuid4().hex}__"


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    connect_timeout: float = 5.0,
    application_name: str = "mailroom",
    pgbouncer: bool = False,
) -> AsyncEngine:
    """`pgbouncer`: safe behind PgBouncer in transaction pooling mode, where consecutive transactions may run on
    different server connections: no prepared statement outlives its transaction or is found by a reused name."""
    target, tls = tls_options(async_url(url))
    connect_args: dict[str, Any] = {
        "timeout": connect_timeout,
        "command_timeout": max(connect_timeout, 30.0),
        "server_settings": {"application_name": application_name},
        **tls,
    }
    if pgbouncer:
        target = target.update_query_dict({"prepared_statement_cache_size": "0"})
        connect_args |= {"statement_cache_size": 0, "prepared_statement_name_func": _unique_statement_name}
    return create_async_engine(
        target,
        pool_size=pool_size,
        max_overflow=max_overflow,
        # A dead server must fail a request fast (the webhook then answers 503 and Nylas retries).
        pool_timeout=connect_timeout,
        pool_pre_ping=False,
        # Errors are logged and shown on the dashboard; their bound parameters would carry email content.
        hide_parameters=True,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        connect_args=connect_args,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    """One round trip on a pooled connection: raises when PostgreSQL does not answer."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def open_connections(engine: AsyncEngine) -> int:
    """Connections the engine's pool holds now, in use or idle."""
    pool = engine.pool
    checked_in, checked_out = getattr(pool, "checkedin", None), getattr(pool, "checkedout", None)
    if checked_in is None or checked_out is None:
        return 0  # a pool that keeps none (NullPool)
    return int(checked_in()) + int(checked_out())
