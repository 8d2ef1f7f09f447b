"""The classification and action configuration file (TOML), validated into typed rules."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_RULES = Path(__file__).with_name("default_rules.toml")


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    class_: str = Field(alias="class")
    from_address: list[str] = []
    from_address_contains: list[str] = []
    from_domain: list[str] = []
    subject_keywords: list[str] = []
    body_keywords: list[str] = []
    header: list[str] = []
    folder: list[str] = []


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Move(_Action):
    kind: Literal["move"]
    folder: str


class Label(_Action):
    kind: Literal["label"]
    folder: str


class MarkRead(_Action):
    kind: Literal["mark_read"]


class MarkUnread(_Action):
    kind: Literal["mark_unread"]


class Star(_Action):
    kind: Literal["star"]


class DraftReply(_Action):
    kind: Literal["draft_reply"]
    template: str


class Forward(_Action):
    kind: Literal["forward"]
    to: str
    note: str = ""


ActionSpec = Annotated[Move | Label | MarkRead | MarkUnread | Star | DraftReply | Forward, Field(discriminator="kind")]


class RulesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_class: str = "other"
    rules: list[Rule] = []
    actions: dict[str, list[ActionSpec]] = {}


class RulesError(ValueError):
    """The rules file cannot be read or is not valid."""


def load_rules(path: Path | None = None) -> RulesConfig:
    source = path or DEFAULT_RULES
    try:
        return RulesConfig.model_validate(tomllib.loads(source.read_text()))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise RulesError(f"{source}: {exc}") from exc
