"""How every process reaches Redis, from one URL: `redis://`, `rediss://` (TLS, with redis-py's `ssl_*` query
parameters for the CA and a client certificate), `unix://`, with a password or an ACL user, and optionally through
Sentinel. The API's and the CLI's client and the worker's arq settings are made from the same parse, so a TLS option
or a Sentinel reaches all three (arq's own `RedisSettings.from_dsn` drops the `ssl_*` parameters)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis, RedisSettings
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.sentinel import Sentinel

from core.settings import Settings
from jobs.arq_storage import as_queue


class SentinelQueue(ArqRedis):
    """The master found through Sentinel. redis-py leaves the connections to the sentinels open when the master's
    client closes; a worker restarted after each failover would gather them: this closes them too."""

    found_through: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.found_through is not None:
            for client in self.found_through.sentinels:
                await client.aclose()


@dataclass(frozen=True)
class RedisTarget:
    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"

    @classmethod
    def of(cls, settings: Settings) -> RedisTarget:
        if settings.redis_url is None:
            raise ValueError("no redis_url (the CLI resolves the embedded default)")
        return cls(settings.redis_url, tuple(settings.redis_sentinel_addresses), settings.redis_sentinel_master)

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = dict(parse_url(self.url))
        connection_class = options.pop("connection_class", None)
        options["ssl"] = isinstance(connection_class, type) and issubclass(connection_class, SSLConnection)
        return options

    def client(self, *, timeout: float) -> ArqRedis:
        """A client that connects lazily, so the API starts (and keeps answering) while Redis is down."""
        common: dict[str, Any] = {
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
            "health_check_interval": 30,
        }
        if not self.sentinels:
            redis: ArqRedis = ArqRedis.from_url(self.url, **common)
            return redis
        options = {k: v for k, v in self._options().items() if k not in ("host", "port", "path")}
        if not options.pop("ssl"):
            options = {k: v for k, v in options.items() if not k.startswith("ssl_")}
        else:
            options["ssl"] = True
        # The sentinels get the timeouts, not the master's password: Sentinel has its own (or none).
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(self.sentinels),
            sentinel_kwargs={"socket_connect_timeout": timeout, "socket_timeout": timeout},
            **options,
            **common,
        )
        master: SentinelQueue = sentinel.master_for(self.sentinel_master, redis_class=SentinelQueue)
        master.found_through = sentinel
        return master

    def arq_settings(self, *, timeout: float, connect_retries: int) -> RedisSettings:
        """The worker's: arq opens its own pool from these, retrying `connect_retries` times a second at start-up."""
        options = self._options()
        return RedisSettings(
            host=list(self.sentinels) if self.sentinels else options.get("host", "localhost"),
            port=options.get("port", 6379),
            unix_socket_path=options.get("path"),
            database=options.get("db", 0),
            username=options.get("username"),
            password=options.get("password"),
            ssl=options["ssl"],
            ssl_keyfile=options.get("ssl_keyfile"),
            ssl_certfile=options.get("ssl_certfile"),
            ssl_cert_reqs=options.get("ssl_cert_reqs", "required"),
            ssl_ca_certs=options.get("ssl_ca_certs"),
            ssl_check_hostname=bool(options.get("ssl_check_hostname", False)),
            sentinel=bool(self.sentinels),
            sentinel_master=self.sentinel_master,
            conn_timeout=max(1, int(timeout)),
            conn_retries=connect_retries,
            conn_retry_delay=1,
        )


def open_queue(target: RedisTarget, *, timeout: float, queue_name: str) -> ArqRedis:
    return as_queue(target.client(timeout=timeout), queue_name=queue_name)


def queue_for(settings: Settings) -> ArqRedis:
    """The queue client of the API and the CLI; the caller closes it (`aclose`)."""
    return open_queue(RedisTarget.of(settings), timeout=settings.redis_timeout, queue_name=settings.queue_name)


def open_connections(client: ArqRedis) -> int:
    """Connections the client's pool holds now, in use or idle (redis-py opens one per concurrent command)."""
    pool = client.connection_pool
    return len(getattr(pool, "_available_connections", ())) + len(getattr(pool, "_in_use_connections", ()))
