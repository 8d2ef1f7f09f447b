"""The worker's resources, built once in `on_startup` and handed to every job as one typed object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.metrics import Metrics
from core.settings import Settings
from jobs.classifier import Classifier
from jobs.heartbeat import Heartbeat
from jobs.message_fetch import Fetcher
from jobs.nylas_client import NylasGateway
from jobs.pausing import PauseWatch
from jobs.rules import RulesConfig
from jobs.throttle import GrantThrottle

if TYPE_CHECKING:
    from jobs.email_stages import StageBody

CTX_KEY = "jobctx"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobContext:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    nylas: NylasGateway
    fetcher: Fetcher  # the batch worker's message fetches
    queue: ArqRedis
    throttle: GrantThrottle
    rules: RulesConfig
    classifier: Classifier
    metrics: Metrics
    heartbeat: Heartbeat
    pauses: PauseWatch  # operators' pauses (jobs/pausing.py)
    # The email stages by name, for the chain to run the next one inline (the worker composes them).
    stages: Mapping[str, StageBody]

    @classmethod
    def from_ctx(cls, ctx: dict[str, Any]) -> JobContext:
        jc = ctx[CTX_KEY]
        assert isinstance(jc, cls)
        return jc
