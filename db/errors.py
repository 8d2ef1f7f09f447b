"""Driver and pool failures, translated once so callers handle one exception."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
from sqlalchemy.exc import SQLAlchemyError


class DatabaseError(Exception):
    """The database could not carry out the operation (unreachable, timed out or refused it)."""


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn any SQLAlchemy, asyncpg or socket failure inside the block into `DatabaseError`."""
    try:
        yield
    except (SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        # OSError includes ConnectionRefusedError and TimeoutError raised while connecting.
        raise DatabaseError(f"{type(exc).__name__}: {exc}") from exc
