"""Driver and pool failures, translated once so callers handle one exception."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
from sqlalchemy.exc import SQLAlchemyError


class DatabaseError(Exception):
    """The database could not carry out the operation (unreachable, timed out or refused it)."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        # The server refused the data (a constraint, a value it cannot store): retrying the same rows will not help,
        # but other rows written with them may well be fine.
        self.refused = refused


def _refused(exc: BaseException) -> bool:
    """SQLSTATE class 22 (data exception) or 23 (integrity violation), wherever the driver layers put it."""
    seen: BaseException | None = exc
    while seen is not None:
        code = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(code, str):
            return code[:2] in ("22", "23")
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn any SQLAlchemy, asyncpg or socket failure inside the block into `DatabaseError`."""
    try:
        yield
    except (SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        # OSError includes ConnectionRefusedError and TimeoutError raised while connecting.
        raise DatabaseError(f"{type(exc).__name__}: {exc}", refused=_refused(exc)) from exc
