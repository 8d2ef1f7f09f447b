"""How many connections a process opens at its settings. PostgreSQL's `max_connections` (100 by default) is the
first limit an operator meets when adding replicas: README, "Connection budgets", sizes it against KEDA's
`maxReplicaCount` with these numbers, and /metrics shows each process's budget and what it has open."""

from __future__ import annotations

from typing import Literal

from core.settings import Settings

Role = Literal["api", "worker"]


def postgres_connections(settings: Settings, role: Role) -> int:
    """The most connections this process holds to PostgreSQL (or PgBouncer): SQLAlchemy's pool never opens more
    (beyond, a request waits MAILROOM_DB_CONNECT_TIMEOUT for one); a batch worker adds its LISTEN connection."""
    pool = settings.db_pool_size + settings.db_max_overflow
    listens = role == "worker" and settings.batch_worker and not settings.database_pgbouncer
    return pool + (1 if listens else 0)
