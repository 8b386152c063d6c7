"""The results as a table, as `summary:` lines, and as JSON with the run's environment."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cli_start
import elastic
import pg_dashboard
import runtimes
from options import LATENCY_WORKERS, Options

from reporun.jobs import PHASES

LISTING_TARGET = 0.020  # p95 of GET /v1/jobs, seconds


def table(results: dict[str, Any]) -> str:
    lines = embedded_table(results) if "throughput" in results else []
    if "elastic" in results:
        lines += elastic.table(results["elastic"])
    if "postgres" in results:
        lines += postgres_table(results["postgres"])
    if "cli_start" in results:
        lines += cli_start.table(results["cli_start"])
    if "runtimes" in results:
        lines += runtimes.table(results["runtimes"])
    return "\n".join(lines)


def embedded_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"{'parallelism':<12} {'reporun jobs/s':>15} {'hand jobs/s':>12} {'reporun/hand':>13}"
        f" {'floor jobs/s':>13} {'reporun/floor':>14} {'celery jobs/s':>14}"
        f" {'reporun/celery':>15} {'reporun run_s p50':>18}",
    ]
    for row in results["throughput"]:
        lines.append(
            f"{row['parallelism']:<12} {row['reporun_jobs_per_second']:>15.2f}"
            f" {row['hand_jobs_per_second']:>12.2f} {row['ratio']:>13.2f}"
            f" {row['floor_jobs_per_second']:>13.2f} {row['ratio_floor']:>14.2f}"
            f" {row['celery_jobs_per_second']:>14.2f} {row['ratio_celery']:>15.2f}"
            f" {row['reporun_run_seconds_p50']:>18.3f}"
        )
    for row in results["throughput"]:
        shown = [
            f"{name} {row[f'reporun_phase_{name}_p50'] * 1000:.1f}"
            for name in PHASES
            if row.get(f"reporun_phase_{name}_p50") is not None
        ]
        lines.append(f"  {row['parallelism']} worker(s), phases p50 ms: " + ", ".join(shown))
    first = results["throughput"][0]
    rounds = len(first["reporun_rounds_seconds"])
    lines.append(f"({first['jobs']} jobs per cell, median of {rounds} round(s);")
    lines.append(" parallelism = reporun workers = hand-loop lanes; run_s = claimed -> finished)")
    latency = results["dispatch_latency"]
    lines.append(
        f"dispatch latency, {LATENCY_WORKERS} idle workers, {latency['jobs']} jobs:"
        f" p50 {latency['p50']:.3f} s, p95 {latency['p95']:.3f} s, max {latency['max']:.3f} s"
    )
    lines.append(
        f"single-job latency (submit returned -> ended job readable): p50"
        f" {latency['latency_p50'] * 1000:.1f} ms, p95 {latency['latency_p95'] * 1000:.1f} ms"
    )
    sub = results["submissions"]
    lines.append(
        f"submissions, --workers 0, {sub['clients']} clients, {sub['posts']} POSTs:"
        f" {sub['per_second']:.1f}/s (POST p50 {sub['latency_p50'] * 1000:.1f} ms,"
        f" p95 {sub['latency_p95'] * 1000:.1f} ms)"
    )
    return lines


def _verdict(p95: float | None) -> str:
    if p95 is None:
        return "unmeasured"
    return "met" if p95 < LISTING_TARGET else "missed"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def postgres_table(pg: dict[str, Any]) -> list[str]:
    lines = ["", f"PostgreSQL {pg['version']}, cluster mode (api + workers), {pg['server']}"]
    if dispatch := pg.get("dispatch"):
        lines.append(f"dispatch latency, 2 idle workers, {dispatch['notify']['jobs']} jobs:")
        for mode in ("notify", "poll"):
            row = dispatch[mode]
            lines.append(
                f"  {mode:<8} p50 {row['p50']:.3f} s  p95 {row['p95']:.3f} s"
                f"  max {row['max']:.3f} s"
            )
        lines.append(
            f"  poll/notify: p50 x{dispatch['ratio_p50']:.1f}, p95 x{dispatch['ratio_p95']:.1f}"
        )
    if rows := pg.get("throughput"):
        lines.append(f"throughput, {rows[0]['jobs']} jobs from 4 clients (first POST -> last end):")
        for row in rows:
            lines.append(
                f"  {row['workers']} worker(s)  {row['jobs_per_second']:7.2f} jobs/s"
                f"  ({row['seconds']:.2f} s, run_s p50 {row['run_seconds_p50']:.3f})"
            )
    if load := pg.get("load"):
        lines.append(
            f"load, {load['jobs']} jobs, {load['submitters']} submitters, {load['workers']}"
            f" workers: {load['seconds']:.1f} s, {load['jobs_per_second']:.2f} jobs/s"
        )
        lines.append(
            f"  exactly once: {load['succeeded']} succeeded, {load['attempts_not_1']} retried,"
            f" none left; POSTs {load['posts_per_second']:.1f}/s (p50 {_ms(load['post_p50'])} ms,"
            f" p95 {_ms(load['post_p95'])} ms); queue wait p50 {load['wait_p50']:.1f} s"
        )
    if listing := pg.get("listing"):
        lines += listing_table(listing)
    if dashboard := pg.get("dashboard"):
        lines += pg_dashboard.table(dashboard)
    for row in pg.get("lease", []):
        lines.append(
            f"dead worker, {row['lease_seconds']:g} s lease"
            f"{'' if row['lease_set'] else ' (default)'}: running again after"
            f" {row['running_again_seconds']:.1f} s, ended after {row['ended_seconds']:.1f} s"
        )
    if kafka := pg.get("kafka"):
        lines += kafka_table(kafka)
    return lines


def kafka_table(kafka: dict[str, Any]) -> list[str]:
    lines = ["Kafka queue (Tansu) against the SQL queue (LISTEN/NOTIFY), same run:"]
    if rows := kafka["dispatch"]:
        lines.append(
            f"dispatch latency, idle workers, {rows[0]['sql']['jobs']} jobs one at a time:"
        )
        for row in rows:
            for queue in ("sql", "kafka"):
                cell = row[queue]
                lines.append(
                    f"  {row['workers']} worker(s) {queue:<6} p50 {cell['p50']:.3f} s"
                    f"  p95 {cell['p95']:.3f} s  max {cell['max']:.3f} s"
                )
            cell, outbox = row["kafka"], row["kafka"]["outbox"]
            lines.append(
                f"  {row['workers']} worker(s) kafka/sql: p50 x{row['ratio_p50']:.1f},"
                f" p95 x{row['ratio_p95']:.1f}; {cell['by_message']} by message,"
                f" {cell['by_handoff']} by the hand-off; outbox created -> published"
                f" p50 {_ms(outbox['p50'])} ms, p95 {_ms(outbox['p95'])} ms"
            )
    if rows := kafka["throughput"]:
        lines.append(f"throughput, {rows[0]['jobs']} jobs from 4 clients (first POST -> last end):")
        for row in rows:
            sql, cell = row["sql"], row["kafka"]
            lines.append(
                f"  {row['workers']} worker(s)  sql {sql['jobs_per_second']:7.2f} jobs/s"
                f"  kafka {cell['jobs_per_second']:7.2f} jobs/s  kafka/sql {row['ratio']:.2f}"
                f"  (run_s p50 sql {sql['run_seconds_p50']:.3f},"
                f" kafka {cell['run_seconds_p50']:.3f})"
            )
    return lines


def listing_table(listing: dict[str, Any]) -> list[str]:
    lines = [
        f"listing, {listing['rows']} jobs ({listing['table_size']}, inserted in"
        f" {listing['insert_seconds']:.0f} s), GET /v1/jobs?limit=50, target p95 <"
        f" {LISTING_TARGET * 1000:.0f} ms:",
        f"  {'case':<22} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  plan",
    ]
    plans = listing["plans"]
    rows = {**listing["cases"], "POST, empty queue": listing["submit_empty_queue"]}
    for name, row in rows.items():
        plan = plans.get(name if name in listing["cases"] else "submit_empty_queue")
        shown = ""
        if plan:
            shown = " > ".join(plan["nodes"][:3])
            if seq := [n for n in plan["nodes"][3:] if n.startswith("Seq Scan")]:
                shown += f" ... {len(seq)} x {seq[0]}"
            if plan["rows_removed_by_filter"]:
                shown += f" (filtered {plan['rows_removed_by_filter']} rows)"
            shown += f", {plan['execution_ms']:.1f} ms{' with JIT' if plan['jit'] else ''}"
        late = row["p95"] is not None and row["p95"] >= LISTING_TARGET
        flag = " !" if name in listing["cases"] and late else ""
        lines.append(
            f"  {name:<22} {row['requests']:>8} {_ms(row['p50']):>8} {_ms(row['p95']):>8}"
            f" {_ms(row['max']):>8}{flag:2} {shown}"
        )
    metrics = listing["metrics_seconds"]
    later = listing.get("metrics_later_seconds", metrics)
    lines.append(
        f"  (! = a GET's p95 over the target; plan = EXPLAIN ANALYZE of the store's statement;"
        f" GET /metrics: first {metrics:.2f} s, then {later * 1000:.0f} ms)"
    )
    return lines


def summary(results: dict[str, Any]) -> str:
    lines = []
    for row in results.get("throughput", []):
        lines.append(
            f"summary: throughput parallelism={row['parallelism']}"
            f" reporun={row['reporun_jobs_per_second']:.2f} jobs/s"
            f" hand={row['hand_jobs_per_second']:.2f} jobs/s ratio={row['ratio']:.2f}"
            f" floor={row['floor_jobs_per_second']:.2f} jobs/s"
            f" ratio_floor={row['ratio_floor']:.2f}"
            f" celery={row['celery_jobs_per_second']:.2f} jobs/s"
            f" ratio_celery={row['ratio_celery']:.2f}"
        )
    if latency := results.get("dispatch_latency"):
        lines.append(
            f"summary: dispatch_latency p50={latency['p50']:.3f} s p95={latency['p95']:.3f} s"
        )
        lines.append(
            f"summary: single_job_latency p50={latency['latency_p50'] * 1000:.1f} ms"
            f" p95={latency['latency_p95'] * 1000:.1f} ms"
        )
    if "submissions" in results:
        lines.append(f"summary: submissions {results['submissions']['per_second']:.1f} per s")
    lines += elastic.summary(results.get("elastic", {}))
    lines += postgres_summary(results.get("postgres", {}))
    lines += cli_start.summary(results.get("cli_start"))
    lines += runtimes.summary(results.get("runtimes"))
    return "\n".join(lines)


def postgres_summary(pg: dict[str, Any]) -> list[str]:
    lines = []
    if dispatch := pg.get("dispatch"):
        notify, poll = dispatch["notify"], dispatch["poll"]
        lines.append(
            f"summary: pg_dispatch_latency notify p50={notify['p50']:.3f} s"
            f" p95={notify['p95']:.3f} s poll p50={poll['p50']:.3f} s p95={poll['p95']:.3f} s"
            f" ratio_p50={dispatch['ratio_p50']:.1f} ratio_p95={dispatch['ratio_p95']:.1f}"
        )
    for row in pg.get("throughput", []):
        lines.append(
            f"summary: pg_throughput workers={row['workers']} jobs={row['jobs']}"
            f" {row['jobs_per_second']:.2f} jobs/s"
        )
    if load := pg.get("load"):
        lines.append(
            f"summary: pg_load jobs={load['jobs']} submitters={load['submitters']}"
            f" workers={load['workers']} seconds={load['seconds']:.1f}"
            f" {load['jobs_per_second']:.2f} jobs/s exactly_once={load['exactly_once']}"
        )
    if listing := pg.get("listing"):
        for name, row in listing["cases"].items():
            lines.append(
                f"summary: pg_listing rows={listing['rows']} case={name}"
                f" p50={_ms(row['p50'])} ms p95={_ms(row['p95'])} ms"
                f" target={_verdict(row['p95'])}"
            )
        post = listing["submit_empty_queue"]
        lines.append(
            f"summary: pg_submit_empty_queue rows={listing['rows']}"
            f" p50={_ms(post['p50'])} ms p95={_ms(post['p95'])} ms"
        )
    lines += pg_dashboard.summary(pg.get("dashboard", {}))
    for row in pg.get("lease", []):
        lines.append(
            f"summary: pg_dead_worker lease={row['lease_seconds']:g} s"
            f" running_again={row['running_again_seconds']:.1f} s"
            f" ended={row['ended_seconds']:.1f} s"
        )
    return lines + kafka_summary(pg.get("kafka"))


def kafka_summary(kafka: dict[str, Any] | None) -> list[str]:
    lines: list[str] = []
    for row in (kafka or {}).get("dispatch", []):
        sql, cell = row["sql"], row["kafka"]
        lines.append(
            f"summary: pg_kafka_dispatch_latency workers={row['workers']}"
            f" sql p50={sql['p50']:.3f} s p95={sql['p95']:.3f} s"
            f" kafka p50={cell['p50']:.3f} s p95={cell['p95']:.3f} s"
            f" ratio_p50={row['ratio_p50']:.1f} ratio_p95={row['ratio_p95']:.1f}"
            f" by_message={cell['by_message']} by_handoff={cell['by_handoff']}"
        )
        outbox = cell["outbox"]
        lines.append(
            f"summary: pg_kafka_outbox_publish workers={row['workers']} jobs={outbox['rows']}"
            f" p50={_ms(outbox['p50'])} ms p95={_ms(outbox['p95'])} ms"
            f" unpublished={outbox['unpublished']}"
        )
    for row in (kafka or {}).get("throughput", []):
        lines.append(
            f"summary: pg_kafka_throughput workers={row['workers']} jobs={row['jobs']}"
            f" sql={row['sql']['jobs_per_second']:.2f} jobs/s"
            f" kafka={row['kafka']['jobs_per_second']:.2f} jobs/s ratio={row['ratio']:.2f}"
        )
    return lines


def _git_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            ["git", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    return "unknown"


def environment(options: Options, seconds: float, load_before: float) -> dict[str, Any]:
    return {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "total_seconds": round(seconds, 1),
        "cpus": os.cpu_count(),
        "load_average_1min_before": load_before,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "git": _git_version(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
