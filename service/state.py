"""What the API's lifespan opens and every handler reads from `request.state`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.metrics import Metrics
from core.settings import Settings
from service.event_writer import EventWriter


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    queue: ArqRedis
    webhook_secrets: tuple[str, ...]
    metrics: Metrics
    writer: EventWriter


class AppState(TypedDict):
    resources: Resources
