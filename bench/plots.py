"""PNG plots of one run: ingest latency, the drain over time, freshness, and memory over the steady phase."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def draw(run: dict[str, Any], results: dict[str, Any], out: Path) -> list[Path]:
    paths = []
    ingest, drain, steady = run["ingest"], run["drain"], run["steady"]

    fig, ax = plt.subplots(figsize=(7, 3.5))
    if ingest["latencies_ms"]:
        ax.hist(ingest["latencies_ms"], bins=80, color="#3b6ea8")
        ax.set_xlabel("webhook answer time, ms")
        ax.set_ylabel("requests")
    else:
        ax.bar(["p50", "p99"], [ingest["p50_ms"], ingest["p99_ms"]], color="#3b6ea8")
        ax.set_ylabel("ms")
    ax.set_title(f"Ingest: {ingest['req_per_s']} req/s ({ingest['driver']}, {ingest['requests']} requests)")
    paths.append(_save(fig, out / "ingest_latency.png"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    samples = drain["samples"]
    t = [s["t"] for s in samples]
    ax.plot(t, [s["stored"] for s in samples], label="emails stored")
    ax.plot(t, [s["done"] for s in samples], label="chain done")
    ax.plot(t, [s["queued"] for s in samples], label="waiting (events in PostgreSQL, jobs in Redis)")
    ax.set_xlabel("seconds since the worker started")
    ax.set_title(f"Drain: {drain['emails_stored_per_s']} emails/s stored, {drain['emails_done_per_s']} done")
    ax.legend()
    paths.append(_save(fig, out / "drain.png"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    freshness = steady["freshness_ms"]
    if freshness:
        ax.plot(freshness, [i / len(freshness) for i in range(len(freshness))])
        ax.set_xscale("log")
    ax.set_xlabel("webhook sent -> email stored, ms")
    ax.set_ylabel("share of emails")
    ax.set_title(
        f"Freshness at {steady['rate']:.0f}/s: p50 {steady['freshness_p50_ms']} ms, p99 {steady['freshness_p99_ms']} ms"
    )
    paths.append(_save(fig, out / "freshness.png"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    memory = steady["memory"]
    ax.plot([m["t"] for m in memory], [m["api_mb"] for m in memory], label="API")
    ax.plot([m["t"] for m in memory], [m["worker_mb"] for m in memory], label="worker")
    ax.set_xlabel("seconds into the steady phase")
    ax.set_ylabel("RSS, MB")
    ax.set_ylim(bottom=0)
    ax.set_title("Memory")
    ax.legend()
    paths.append(_save(fig, out / "memory.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
