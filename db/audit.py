"""Repository for ``audit_log``: what operators did (replay, purge, erase) and sign-ins refused, newest first."""

from __future__ import annotations

import getpass
import socket
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditEntry


def cli_operator() -> str:
    """Who runs a `mailroom` command: the OS user on this host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


async def record(
    session: AsyncSession, *, who: str, action: str, filter: dict[str, Any] | None = None, rows: int | None = None
) -> None:
    """In the caller's transaction, so the entry stands or falls with the action itself."""
    values = {"who": who[:200], "action": action, "filter": filter or {}, "rows": rows}
    await session.execute(insert(AuditEntry).values(**values))


async def latest(session: AsyncSession, *, limit: int = 50, action: str | None = None) -> list[AuditEntry]:
    stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if action is not None:
        stmt = stmt.where(AuditEntry.action == action)
    return list((await session.execute(stmt)).scalars())
