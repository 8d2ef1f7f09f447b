"""The benchmark's printed table: each figure beside its target and the ceilings measured in the same run."""

from __future__ import annotations

import argparse
import os
from typing import Any


def print_table(results: dict[str, Any], args: argparse.Namespace) -> None:
    m, c = results["median"], results["ceilings"]
    pg, rd, arq = c["postgres"], c["redis"], c["arq"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    # (name, figure, target, verdict, ceiling); targets from the batch worker's issue (README, Performance).
    rows = [
        (
            "ingest, closed loop",
            f"{m['ingest_req_per_s']:.0f} req/s, p50 {m['ingest_p50_ms']:.1f} ms, p99 {m['ingest_p99_ms']:.1f} ms, "
            f"non-2xx {m['ingest_non_2xx']:.0f}",
            "",
            "",
            f"trivial endpoint {c['trivial_endpoint']['req_per_s']} req/s",
        ),
        (
            f"ingest at {args.ingest_rate:.0f}/s",
            f"p50 {m['fixed_rate_p50_ms']:.1f} ms, p99 {m['fixed_rate_p99_ms']:.1f} ms "
            f"(sent {m['fixed_rate_achieved']:.0f}/s)",
            "p99 <= 50 ms",
            verdict(m["fixed_rate_p99_ms"] <= 50),
            "",
        ),
        (
            "drain, stored",
            f"{m['drain_emails_stored_per_s']:.0f} emails/s",
            ">= 1,000/s",
            verdict(m["drain_emails_stored_per_s"] >= 1000),
            f"arq no-op {arq['jobs_per_s']} jobs/s",
        ),
        ("drain, chain done", f"{m['drain_emails_done_per_s']:.0f} emails/s", "", "", ""),
        (
            "CPU per email, ours",
            f"{m['cpu_ms_per_email']:.2f} ms (ingest {m['cpu_ms_per_email_ingest']:.2f} + drain "
            f"{m['cpu_ms_per_email_drain']:.2f}): API, worker, PostgreSQL, Redis",
            "<= 1.6 ms",
            verdict(m["cpu_ms_per_email"] <= 1.6),
            f"arq alone {arq['worker_cpu_ms_per_job']} ms a job",
        ),
        ("CPU per email, fake Nylas", f"{m['fake_nylas_cpu_ms_per_email']:.2f} ms (not ours)", "", "", ""),
        (
            f"freshness at {args.rate:.0f}/s",
            f"p50 {m['freshness_p50_ms']:.0f} ms, p99 {m['freshness_p99_ms']:.0f} ms",
            "p50 <= 100, p99 <= 500 ms",
            verdict(m["freshness_p50_ms"] <= 100 and m["freshness_p99_ms"] <= 500),
            "",
        ),
        (
            "memory, max RSS",
            f"API {m['api_rss_mb']:.0f} MB, worker {m['worker_rss_mb'] / args.workers:.0f} MB"
            + (f" each ({args.workers})" if args.workers > 1 else ""),
            "worker <= 200 MB",
            verdict(m["worker_rss_mb"] / args.workers <= 200),
            "",
        ),
        (
            "PostgreSQL commits",
            "",
            "",
            "",
            f"{pg['insert_tps_1_client']} tps from 1 client, {pg['insert_tps_4_clients']} from 4",
        ),
        (
            "Redis SET",
            "",
            "",
            "",
            f"{rd['set_per_s_1_connection']}/s on 1 connection, {rd['set_per_s_4_connections']} on 4",
        ),
    ]
    runs = int(args.runs)
    print(
        f"\nmedian of {runs} run{'s' if runs > 1 else ''}, {os.cpu_count()} cores, Nylas latency "
        f"{args.latency * 1000:.0f} ms, {args.apis} API + {args.workers} worker process(es)"
    )
    width = max(len(r[0]) for r in rows)
    for name, figure, target, met, ceiling in rows:
        goal = f"[{target}: {met}]" if target else ""
        print(f"  {name:<{width}}  {figure:<72} {goal:<32} {('| ' + ceiling) if ceiling else ''}")
