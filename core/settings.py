"""Process settings, read once from ``MAILROOM_*`` environment variables (and ``.env``) by each entry point.

Nothing here is instantiated at import time: entry points build a ``Settings`` and pass it down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MAX_WEBHOOK_SECRETS = 4


def _check_port(parts: SplitResult) -> None:
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise ValueError("the port is not a number") from None


class Settings(BaseSettings):
    """Everything the API, the worker and the CLI need; every field is documented in the README."""

    model_config = SettingsConfigDict(env_prefix="MAILROOM_", env_file=".env", extra="ignore")

    # Connections. Unset means "start the embedded servers under data_dir" (see mailroom.embedded).
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".mailroom")

    # Nylas.
    nylas_api_key: SecretStr = SecretStr("")
    nylas_api_uri: str = "https://api.us.nylas.com"
    nylas_timeout: float = Field(default=20.0, gt=0)
    # Comma-separated so a secret can be rotated: add the new one, switch Nylas over, remove the old one.
    webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # Admin surface; bearer token.
    admin_token: SecretStr = SecretStr("")
    # Failed logins and wrong bearer tokens one client may send a minute before it is answered 429.
    auth_failures_per_minute: int = Field(default=10, gt=0)

    # HTTP edge.
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    max_decompressed_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    # The request line and headers together, and how long a client may take to send them and then its body.
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    # Connections and requests one API process takes at once; beyond, uvicorn answers 503 (Nylas retries those).
    max_concurrency: int = Field(default=2000, gt=0)
    # Addresses (comma-separated, CIDR allowed, "*" for any) of the TLS proxies whose X-Forwarded-For/-Proto are
    # believed; empty: none are (a client could otherwise claim https, or any address for the login limit).
    trusted_proxies: str = ""
    # Group commit: concurrent deliveries are stored by this many writers, up to this many rows per transaction.
    ingest_writers: int = Field(default=2, gt=0)
    ingest_max_batch: int = Field(default=200, gt=0)

    # PostgreSQL reached through PgBouncer in transaction pooling mode: no prepared-statement cache, no LISTEN (the
    # batch worker polls), and migrations through MAILROOM_MIGRATIONS_DATABASE_URL when that is set (a direct URL).
    database_pgbouncer: bool = False
    migrations_database_url: str | None = None

    # Database pool.
    db_pool_size: int = Field(default=10, gt=0)
    db_max_overflow: int = Field(default=10, ge=0)
    db_connect_timeout: float = Field(default=5.0, gt=0)

    # Redis / queue. With sentinels (host:port,…), the master is found through them by name and followed across a
    # failover; MAILROOM_REDIS_URL then gives only the credentials, database and TLS options (its host is ignored).
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_sentinel_master: str = "mymaster"
    redis_timeout: float = Field(default=2.0, gt=0)
    queue_name: str = "mailroom:queue"

    # Worker. arq re-runs a killed worker's job only after the longest job timeout + 10 s: keep timeouts tight.
    worker_concurrency: int = Field(default=50, gt=0)
    worker_poll_delay: float = Field(default=0.05, gt=0)
    job_timeout: float = Field(default=30.0, gt=0)
    # Run an email's next stage in the job that finished the one before (see jobs/chain.py); off: a job per stage.
    chain_inline: bool = True
    # The batch worker (jobs/pump.py): workers claim stored events from PostgreSQL in batches and fetch, store and
    # classify each batch together. Off: the API queues one `process_event` job per event. API and workers must
    # agree. Batches one worker runs at once, and the most events one batch claims:
    batch_worker: bool = True
    worker_batches: int = Field(default=16, gt=0)
    worker_batch_size: int = Field(default=100, gt=0)
    # Message fetches one worker process keeps in flight to Nylas (its connection pool).
    nylas_connections: int = Field(default=100, gt=0)
    # `http`: the SDK's request on aiohttp (jobs/message_fetch.py); `sdk`: through the SDK's own calls on threads.
    nylas_fetch: Literal["http", "sdk"] = "http"
    # Retry policy, one for every stage; the defaults mirror the Celery guide (3 tries, about a minute apart).
    job_max_tries: int = Field(default=3, gt=0)
    retry_base_delay: float = Field(default=60.0, ge=0)
    retry_max_delay: float = Field(default=600.0, ge=0)

    # Classification and actions.
    rules_file: Path | None = None  # None: the rule set shipped in jobs/default_rules.toml
    classifier: str = "rules"  # or "package.module:factory" returning a Classifier
    actions_dry_run: bool = False

    # Calls to Nylas per grant per second, across all workers (Nylas allows 200; providers allow less).
    nylas_rate_per_grant: int = Field(default=10, gt=0)

    # Cron.
    sync_interval_minutes: int = Field(default=10, ge=1, le=60)
    sync_overlap_seconds: int = Field(default=300, ge=0)
    sync_initial_lookback_hours: float = Field(default=24.0, ge=0)
    sync_page_size: int = Field(default=50, ge=1, le=200)
    sync_pages_per_job: int = Field(default=10, ge=1)
    # Nylas's webhook destinations: their health checked this often (0: never; divides 60 s, or whole minutes that
    # divide an hour), and while one is unhealthy, the grants backfilled this often (jobs/webhook_health.py).
    nylas_webhook_check_seconds: int = Field(default=300, ge=0, le=3600)
    nylas_webhook_backfill_after_seconds: int = Field(default=900, gt=0)
    sweep_interval_seconds: int = Field(default=60, ge=1, le=60)  # how often the sweeper runs (divides 60)
    # Work with no live job for this long is queued again by the sweeper (must exceed job_timeout).
    sweep_after_seconds: float = Field(default=120.0, gt=0)
    sweep_batch: int = Field(default=1000, gt=0)
    job_keep_result: float = Field(default=3600.0, ge=0)
    # Mail content (bodies, subjects, participants, raw objects) older than this many days is erased by the sweeper,
    # keeping ids and states (so deduplication holds); 0 keeps it for ever.
    retention_days: int = Field(default=0, ge=0)
    test_task_sleep: float = Field(default=1.0, ge=0)

    # The dashboard's history: every API samples queue depth and the stage counters this often into PostgreSQL
    # (one row per interval however many APIs run; 0: no sampling) and keeps this many hours of them.
    history_seconds: int = Field(default=10, ge=0, le=300)
    history_keep_hours: int = Field(default=24, ge=1, le=24 * 31)

    # On SIGTERM: running jobs and requests get this long to finish (match the container stop timeout and
    # Kubernetes' terminationGracePeriodSeconds, minus a few seconds); unfinished jobs go back to the queue.
    shutdown_grace_seconds: int = Field(default=25, ge=0)
    # At start-up, how long to keep retrying PostgreSQL and Redis before giving up (services start in any order).
    startup_wait_seconds: float = Field(default=60.0, ge=0)

    # Logs.
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("webhook_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_secrets")
    @classmethod
    def _few_secrets(cls, value: list[SecretStr]) -> list[SecretStr]:
        # Every delivery is checked against each one: the list is for rotation (new,old), not a key ring.
        if len(value) > MAX_WEBHOOK_SECRETS:
            raise ValueError(f"{len(value)} secrets; at most {MAX_WEBHOOK_SECRETS} (rotation needs two)")
        return value

    @field_validator("nylas_webhook_check_seconds")
    @classmethod
    def _check_schedulable(cls, value: int) -> int:
        if value == 0 or (value < 60 and 60 % value == 0) or (value % 60 == 0 and 60 % (value // 60) == 0):
            return value
        raise ValueError(f"{value}: a divisor of 60 seconds, or a whole number of minutes dividing 60 (e.g. 300)")

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _split_sentinels(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _check_sentinels(cls, value: list[str]) -> list[str]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{address!r} is not host:port; expected sentinel-1:26379,sentinel-2:26379")
        return value

    @property
    def redis_sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(host, int(port)) for host, _, port in (a.rpartition(":") for a in self.redis_sentinels)]

    @field_validator("database_url", "migrations_database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError("not a URL; expected postgresql://user:password@host:5432/database") from None
        except ValueError:
            raise ValueError("the port is not a number") from None
        if not url.drivername.startswith(("postgresql", "postgres")):
            raise ValueError(f"scheme {url.drivername}:// is not PostgreSQL; expected postgresql://") from None
        if not url.database:
            raise ValueError("no database name; expected postgresql://user:password@host:5432/database")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("expected redis://host:6379/0, rediss://… (TLS) or unix:///path/to/redis.sock")
        _check_port(parts)
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("no host; expected redis://host:6379/0")
        database = parts.path.strip("/")
        if parts.scheme != "unix" and database and not database.isdigit():
            raise ValueError(f"the database {database!r} is not a number; expected redis://host:6379/0")
        return value

    @field_validator("nylas_api_uri")
    @classmethod
    def _check_nylas_api_uri(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected https://api.us.nylas.com (or https://api.eu.nylas.com)")
        _check_port(parts)
        return value

    @property
    def migrations_url(self) -> str | None:
        """Where migrations run: a direct connection when one is given (DDL and Alembic's session need no pooler)."""
        return self.migrations_database_url or self.database_url

    @property
    def migrations_through_pgbouncer(self) -> bool:
        return self.database_pgbouncer and self.migrations_database_url is None

    @property
    def uses_embedded(self) -> bool:
        return self.database_url is None or self.redis_url is None
