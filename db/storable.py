"""Values PostgreSQL cannot store, made storable."""

from __future__ import annotations

from typing import Any


def strip_nul(value: Any) -> Any:
    """PostgreSQL text and JSONB cannot hold U+0000; drop it rather than fail the write (and every retry) forever."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {strip_nul(k): strip_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_nul(v) for v in value]
    return value
