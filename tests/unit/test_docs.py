"""The README and .env.example document every setting, and every CLI command is in the README."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings
from mailroom.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("document", ["README.md", ".env.example"])
def test_every_setting_is_documented(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = [f"MAILROOM_{name.upper()}" for name in Settings.model_fields if f"MAILROOM_{name.upper()}" not in text]
    assert missing == []


def test_every_command_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    subcommands = next(a for a in build_parser()._actions if a.dest == "command")
    assert subcommands.choices is not None
    assert [c for c in subcommands.choices if f"`mailroom {c}" not in readme] == []


def test_every_status_the_code_uses_is_in_the_readme() -> None:
    from db.models import EVENT_STATUSES, PIPELINE_STATES

    readme = (ROOT / "README.md").read_text()
    statuses = readme.split("Event statuses:", 1)[1].split("\n\n", 1)[0]
    assert [s for s in (*EVENT_STATUSES, *PIPELINE_STATES) if f"`{s}`" not in statuses] == []


def test_the_vendored_chart_library_is_what_its_source_note_says() -> None:
    """uPlot is copied from the npm registry's tarball: a file that differs from the recorded digest was changed by
    hand or half-upgraded."""
    import hashlib

    folder = ROOT / "service" / "static" / "uplot"
    rows = [line.split("|")[1:3] for line in (folder / "SOURCE.md").read_text().splitlines() if line.count("|") == 3]
    recorded = {name.strip(): digest.strip() for name, digest in rows if name.strip() not in {"file", "---"}}
    assert set(recorded) == {"uPlot.iife.min.js", "uPlot.min.css", "LICENSE"}
    assert {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in recorded} == recorded
