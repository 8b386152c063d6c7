"""reporun benchmarks: `make bench` (or `.venv/bin/python bench/run.py [--quick] [--jobs M]`).

Everything runs on this host, on loopback: a trivial repository (an executable run.sh that
echoes ok) served by `git daemon` over git://, and `reporun serve` started as a subprocess
with a fresh SQLite data dir for each measurement.

What is measured
  throughput     M jobs (default 60) submitted at once through POST /v1/jobs to
                 `reporun serve --workers N`, N = 1 and 2, after warm-up jobs have gone through
                 every worker; seconds from the first POST to the last job's finished_at.
                 Every job must succeed.
  hand loop      The same work, written by hand with the same parallelism (N concurrent lanes):
                 per job `git clone` from the git daemon, then the very bubblewrap run reporun
                 uses (reporun.worker.sandbox.Bubblewrap with reporun's default limits), then the
                 clone removed. No HTTP, no database, no queue, no mirror cache.
  dispatch       created_at -> started_at (`wait_seconds`) of jobs submitted one at a time to
                 two idle workers (each submitted once the previous ended, after a short random
                 pause): how long an idle worker takes to notice a new job. p50 and p95.
  submissions    POST /v1/jobs per second from 8 concurrent clients against
                 `reporun serve --workers 0` (nothing runs the jobs): the API's write path.

How to read the ratios
  reporun/hand = reporun's jobs/s divided by the hand loop's at the same parallelism.
  1.0 means the service (API, queue, database, leases, logs, workers) costs nothing over the
  bare clone-and-sandbox loop; below 1.0 is the overhead per job; above 1.0 means reporun's
  own shortcuts (the mirror cache: a fetch and a checkout instead of a full clone) win back
  more than the service costs. The goal is >= 1.0 with 2 workers. The figures are wall-clock
  on a shared machine: compare runs made on the same host, and expect a few percent of noise.

Each throughput cell is one round of M jobs; `--repeat R` runs R rounds and reports the
median (worth it before deciding anything on a few percent). Percentiles (p50, p95) are the
nearest rank, as the observer takes them (reporun.observer.policy.percentile): the bench's p95
wait is the one the scaler acts on.

Elasticity (`--no-elastic` skips it; see bench/elastic.py): the observer's reaction time,
with its default 1 s tick and polling every 30 s as KEDA does, and the drain time of a burst
of --burst-jobs jobs (default 200) on a fixed single worker, a fixed pool of 4 and the
autoscaled pool (1 to 4), as ratios.

PostgreSQL, cluster mode (`--no-postgres` skips it): `reporun db upgrade`, `reporun api` and
`reporun worker` processes on a fresh database of this machine's PostgreSQL (127.0.0.1:5432,
or a throwaway cluster when none answers), dropped after each measurement.
  pg dispatch    as `dispatch` above, 2 idle workers, with LISTEN/NOTIFY and with polling only
                 (REPORUN_NOTIFY=false); the ratio poll/notify.
  pg throughput  --pg-jobs jobs (default 200) from 4 concurrent clients with 1, 2 and 4
                 workers: first POST -> last finished_at.
  pg load        --pg-load-jobs trivial jobs (default 10000) from 4 submitters with their own
                 user tokens, 4 workers: wall time (first POST -> last finished_at) and jobs/s;
                 checked: every id accepted once, succeeded once, nothing left queued or
                 running, each user lists exactly their own jobs.
  pg listing     --pg-rows jobs (default 1000000) inserted with SQL, ANALYZE, then the api:
                 GET /v1/jobs?limit=50 latency, --pg-requests each (default 200), for the
                 admin, a heavy user (a fifth of the jobs) and a light one, following
                 next_cursor 20 pages deep, status=queued; also a cursor halfway down the list
                 and POST /v1/jobs with an empty queue (fewer requests), and EXPLAIN ANALYZE of
                 the store's own statements. Target: p95 < 20 ms.
  pg lease       one worker runs `sleep 5`, is SIGKILLed mid-job, another starts at once:
                 seconds from the kill until the job runs again (attempt 2) and until it
                 ends, with the default 30 s lease and with REPORUN_LEASE_SECONDS=5.
`--quick` runs each small (50 000 rows, 300 load jobs, only the 5 s lease).

The results are printed as a table, as one `summary:` line per figure, and written to
bench/results/latest.json. Exit status 1 when a job fails or a step times out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as `python bench/run.py`, Python puts bench/ on the path; the harness is under tests/.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import elastic
import pg_workloads
import pgcluster
from base import BenchError, git_repository, progress, serve, traversable_dir
from hand import hand_throughput
from tests.harness import HarnessError
from tests.harness.postgres import Postgres
from workloads import dispatch_latency, reporun_throughput, submission_rate

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
PARALLELISM = (1, 2)
LATENCY_WORKERS = 2
PG_WORKERS = (1, 2, 4)
PG_LOAD_WORKERS = 4
PG_MEASURES = ("dispatch", "throughput", "load", "listing", "lease")
LISTING_TARGET = 0.020  # p95 of GET /v1/jobs, seconds


@dataclass(frozen=True)
class Options:
    jobs: int
    latency_jobs: int
    posts: int
    clients: int
    warmup: int
    rounds: int
    timeout: float
    output: Path
    quick: bool
    embedded: bool = True
    elastic: bool = True
    burst_jobs: int = 200
    reaction_rounds: int = 3
    postgres: bool = True
    pg_measures: tuple[str, ...] = PG_MEASURES
    pg_jobs: int = 200
    pg_load_jobs: int = 10_000
    pg_rows: int = 1_000_000
    pg_requests: int = 200
    pg_leases: tuple[float | None, ...] = (None, 5.0)


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few jobs of each")
    parser.add_argument("--jobs", type=int, help="jobs per throughput run (default 60)")
    parser.add_argument("--latency-jobs", type=int, help="sequential jobs (default 30)")
    parser.add_argument("--posts", type=int, help="POSTs for the submission rate (default 300)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent submitting clients")
    parser.add_argument(
        "--repeat", type=int, default=1, help="throughput rounds per cell; the median counts"
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds for any one phase")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write JSON")
    parser.add_argument(
        "--embedded",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the `reporun serve` (SQLite) measurements",
    )
    parser.add_argument(
        "--elastic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the observer's reaction time and burst drain times",
    )
    parser.add_argument("--burst-jobs", type=int, help="jobs of the elastic burst (default 200)")
    parser.add_argument(
        "--postgres",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the PostgreSQL cluster-mode measurements",
    )
    parser.add_argument(
        "--pg-only",
        metavar="NAMES",
        help=f"comma-separated subset of the PostgreSQL measurements: {','.join(PG_MEASURES)}",
    )
    parser.add_argument("--pg-jobs", type=int, help="jobs per pg throughput run (default 200)")
    parser.add_argument("--pg-load-jobs", type=int, help="jobs of the pg load run (default 10000)")
    parser.add_argument("--pg-rows", type=int, help="jobs in the listing table (default 1000000)")
    parser.add_argument("--pg-requests", type=int, help="requests per listing case (default 200)")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    measures = tuple(m.strip() for m in (args.pg_only or ",".join(PG_MEASURES)).split(","))
    if unknown := set(measures) - set(PG_MEASURES):
        parser.error(f"--pg-only: unknown {sorted(unknown)}; choose from {','.join(PG_MEASURES)}")
    options = Options(
        jobs=args.jobs or (10 if quick else 60),
        latency_jobs=args.latency_jobs or (6 if quick else 30),
        posts=args.posts or (40 if quick else 300),
        clients=args.clients,
        warmup=2,
        rounds=args.repeat,
        timeout=args.timeout,
        output=args.output,
        quick=quick,
        embedded=bool(args.embedded),
        elastic=bool(args.elastic),
        burst_jobs=args.burst_jobs or (12 if quick else 200),
        reaction_rounds=1 if quick else 3,
        postgres=bool(args.postgres),
        pg_measures=measures,
        pg_jobs=args.pg_jobs or (20 if quick else 200),
        pg_load_jobs=args.pg_load_jobs or (300 if quick else 10_000),
        pg_rows=args.pg_rows or (50_000 if quick else 1_000_000),
        pg_requests=args.pg_requests or (40 if quick else 200),
        pg_leases=(5.0,) if quick else (None, 5.0),
    )
    counts = (options.jobs, options.latency_jobs, options.posts, options.clients, options.rounds)
    if (
        min(*counts, options.pg_jobs, options.pg_load_jobs, options.pg_requests, options.burst_jobs)
        < 1
    ):
        parser.error("--jobs, --latency-jobs, --posts, --clients, --repeat and --pg-* must be >= 1")
    if options.pg_rows < 2 * pg_workloads.CURSOR_DEPTH * pg_workloads.LISTING_PAGE:
        parser.error("--pg-rows must be at least 2000 (20 pages deep for the light user too)")
    if not (options.embedded or options.postgres or options.elastic):
        parser.error("--no-embedded, --no-elastic and --no-postgres leave nothing to measure")
    return options


@contextlib.asynccontextmanager
async def bounded(phase: str, seconds: float) -> AsyncIterator[None]:
    """A deadline for one phase; passing it cancels the phase and becomes a BenchError."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise BenchError(f"{phase} took longer than {seconds:.0f} s (--timeout)") from None


# The measurements, in order -----------------------------------------------------------------
async def measure(options: Options, root: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with git_repository(root) as repo:
        progress(f"serving {repo}")
        if options.embedded:
            results["throughput"] = []
            async with bounded("submissions", options.timeout):
                results["submissions"] = await measure_submissions(options, root, repo)
            for lanes in PARALLELISM:
                row, latency = await measure_throughput(options, root, repo, lanes)
                results["throughput"].append(row)
                if latency is not None:
                    results["dispatch_latency"] = latency
        if options.elastic:
            results["elastic"] = await measure_elastic(options, root / "elastic", repo)
        if options.postgres:
            results["postgres"] = await measure_postgres(options, root / "pg", repo)
    return results


async def measure_elastic(options: Options, root: Path, repo: str) -> dict[str, Any]:
    traversable_dir(root)
    results: dict[str, Any] = {}
    async with bounded("elastic reaction", options.timeout * options.reaction_rounds):
        results["reaction"] = await elastic.reaction(
            root, repo, options.reaction_rounds, compare=not options.quick
        )
    # Three drains of the burst, the slowest on one worker, then the scale-in cooldown.
    async with bounded("elastic burst", 3 * options.timeout + options.burst_jobs):
        results["burst"] = await elastic.burst(
            root, repo, options.burst_jobs, cooldown=3.0 if options.quick else None
        )
    return results


async def measure_postgres(options: Options, root: Path, repo: str) -> dict[str, Any]:
    """Each measurement on a fresh database; the server is this machine's or our own."""
    server = await pgcluster.start_postgres()
    results: dict[str, Any] = {"server": pgcluster.description(server)}
    try:
        results["version"] = await pgcluster.version(server)
        progress(f"postgres: {results['server']}, version {results['version']}")
        for name in options.pg_measures:
            results[name] = await PG_STEPS[name](options, server, root, repo)
    finally:
        await pgcluster.stop_postgres(server)
    return results


async def pg_dispatch(options: Options, server: Postgres, root: Path, repo: str) -> Any:
    result = {}
    for notify in (True, False):
        mode = "notify" if notify else "poll"
        progress(f"pg dispatch latency ({mode}): {options.latency_jobs} jobs one at a time")
        async with bounded(f"pg dispatch latency ({mode})", options.timeout):
            result[mode] = await pg_workloads.dispatch(
                server, root, repo, options.latency_jobs, notify
            )
    for figure in ("p50", "p95"):
        result[f"ratio_{figure}"] = result["poll"][figure] / max(result["notify"][figure], 1e-6)
    return result


async def pg_throughput(options: Options, server: Postgres, root: Path, repo: str) -> Any:
    rows = []
    for workers in PG_WORKERS:
        progress(f"pg throughput: {options.pg_jobs} jobs, {workers} worker(s)")
        async with bounded(f"pg throughput with {workers} worker(s)", options.timeout):
            rows.append(await pg_workloads.throughput(server, root, repo, workers, options.pg_jobs))
    return rows


async def pg_load(options: Options, server: Postgres, root: Path, repo: str) -> Any:
    jobs = options.pg_load_jobs
    progress(
        f"pg load: {jobs} jobs, {pg_workloads.SUBMITTERS} submitters, {PG_LOAD_WORKERS} workers"
    )
    # At least 10 jobs/s, or it counts as stuck.
    async with bounded("pg load", options.timeout + jobs / 10):
        return await pg_workloads.load(server, root, repo, jobs, PG_LOAD_WORKERS)


async def pg_listing(options: Options, server: Postgres, root: Path, repo: str) -> Any:
    progress(f"pg listing: {options.pg_rows} jobs in the table, {options.pg_requests} requests")
    async with bounded("pg listing", options.timeout + options.pg_rows / 10_000):
        return await pg_workloads.listing(server, root, options.pg_rows, options.pg_requests)


async def pg_lease(options: Options, server: Postgres, root: Path, repo: str) -> Any:
    rows = []
    for lease in options.pg_leases:
        label = f"{lease:g} s" if lease else "the default"
        progress(f"pg lease: a worker SIGKILLed mid-job, {label} lease")
        async with bounded(f"pg lease ({label})", options.timeout + 3 * (lease or 30.0)):
            rows.append(await pg_workloads.lease(server, root, repo, lease))
    return rows


PG_STEPS: dict[str, Callable[[Options, Postgres, Path, str], Awaitable[Any]]] = {
    "dispatch": pg_dispatch,
    "throughput": pg_throughput,
    "load": pg_load,
    "listing": pg_listing,
    "lease": pg_lease,
}


async def measure_submissions(options: Options, root: Path, repo: str) -> dict[str, float]:
    progress(f"submissions: {options.posts} POSTs from {options.clients} clients, 0 workers")
    async with serve(root, "submit", workers=0) as server:
        return await submission_rate(server, repo, options.posts, options.clients)


async def measure_throughput(
    options: Options, root: Path, repo: str, lanes: int
) -> tuple[dict[str, Any], dict[str, float] | None]:
    progress(f"hand loop: {options.jobs} jobs, {lanes} lane(s)")
    async with bounded(f"hand loop with {lanes} lane(s)", options.timeout):
        hand = await hand_throughput(
            root / f"hand-{lanes}", repo, options.jobs, lanes, options.warmup, options.rounds
        )
    progress(f"reporun: {options.jobs} jobs, {lanes} worker(s)")
    latency = None
    async with serve(root, f"workers-{lanes}", workers=lanes) as server:
        async with bounded(f"reporun with {lanes} worker(s)", options.timeout):
            served = await reporun_throughput(server, lanes, repo, options.jobs, options.rounds)
        if lanes == LATENCY_WORKERS:
            progress(f"dispatch latency: {options.latency_jobs} jobs one at a time")
            async with bounded("dispatch latency", options.timeout):
                latency = await dispatch_latency(server, repo, options.latency_jobs)
    row = {
        "parallelism": lanes,
        "jobs": options.jobs,
        "reporun_seconds": served.seconds,
        "reporun_jobs_per_second": served.per_second,
        "reporun_rounds_seconds": served.rounds,
        "hand_seconds": hand.seconds,
        "hand_jobs_per_second": hand.per_second,
        "hand_rounds_seconds": hand.rounds,
        "ratio": served.per_second / hand.per_second,
        **{f"reporun_{key}": value for key, value in served.extra.items()},
    }
    return row, latency


# Reporting ----------------------------------------------------------------------------------
def table(results: dict[str, Any]) -> str:
    lines = embedded_table(results) if "throughput" in results else []
    if "elastic" in results:
        lines += elastic.table(results["elastic"])
    if "postgres" in results:
        lines += postgres_table(results["postgres"])
    return "\n".join(lines)


def embedded_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"{'parallelism':<12} {'reporun jobs/s':>15} {'hand jobs/s':>12} {'reporun/hand':>13}"
        f" {'reporun run_s p50':>18}",
    ]
    for row in results["throughput"]:
        lines.append(
            f"{row['parallelism']:<12} {row['reporun_jobs_per_second']:>15.2f}"
            f" {row['hand_jobs_per_second']:>12.2f} {row['ratio']:>13.2f}"
            f" {row['reporun_run_seconds_p50']:>18.3f}"
        )
    first = results["throughput"][0]
    rounds = len(first["reporun_rounds_seconds"])
    lines.append(f"({first['jobs']} jobs per cell, median of {rounds} round(s);")
    lines.append(" parallelism = reporun workers = hand-loop lanes; run_s = claimed -> finished)")
    latency = results["dispatch_latency"]
    lines.append(
        f"dispatch latency, {LATENCY_WORKERS} idle workers, {latency['jobs']} jobs:"
        f" p50 {latency['p50']:.3f} s, p95 {latency['p95']:.3f} s, max {latency['max']:.3f} s"
    )
    sub = results["submissions"]
    lines.append(
        f"submissions, --workers 0, {sub['clients']} clients, {sub['posts']} POSTs:"
        f" {sub['per_second']:.1f}/s (POST p50 {sub['latency_p50'] * 1000:.1f} ms,"
        f" p95 {sub['latency_p95'] * 1000:.1f} ms)"
    )
    return lines


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


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
    for row in pg.get("lease", []):
        lines.append(
            f"dead worker, {row['lease_seconds']:g} s lease"
            f"{'' if row['lease_set'] else ' (default)'}: running again after"
            f" {row['running_again_seconds']:.1f} s, ended after {row['ended_seconds']:.1f} s"
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
        flag = " !" if name in listing["cases"] and row["p95"] >= LISTING_TARGET else ""
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
        )
    if latency := results.get("dispatch_latency"):
        lines.append(
            f"summary: dispatch_latency p50={latency['p50']:.3f} s p95={latency['p95']:.3f} s"
        )
    if "submissions" in results:
        lines.append(f"summary: submissions {results['submissions']['per_second']:.1f} per s")
    lines += elastic.summary(results.get("elastic", {}))
    lines += postgres_summary(results.get("postgres", {}))
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
                f" target={'met' if row['p95'] < LISTING_TARGET else 'missed'}"
            )
        post = listing["submit_empty_queue"]
        lines.append(
            f"summary: pg_submit_empty_queue rows={listing['rows']}"
            f" p50={_ms(post['p50'])} ms p95={_ms(post['p95'])} ms"
        )
    for row in pg.get("lease", []):
        lines.append(
            f"summary: pg_dead_worker lease={row['lease_seconds']:g} s"
            f" running_again={row['running_again_seconds']:.1f} s"
            f" ended={row['ended_seconds']:.1f} s"
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


# Entry point --------------------------------------------------------------------------------
async def bench(options: Options) -> dict[str, Any]:
    """Measure inside a temporary directory the jobs' uids can traverse; always removed."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    root = traversable_dir(Path(tempfile.mkdtemp(prefix="reporun-bench-", dir="/tmp")))
    try:
        return await measure(options, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        loop.remove_signal_handler(signal.SIGTERM)


def main(argv: list[str]) -> int:
    options = parse_args(argv)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    if load_before > 0.5 * (os.cpu_count() or 1):
        progress(f"warning: load average {load_before:.2f} before starting: figures will be noisy")
    try:
        results = asyncio.run(bench(options))
    except HarnessError as exc:  # BenchError among them
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted", file=sys.stderr)
        return 130
    print(table(results))
    print()
    print(summary(results))
    document = {
        **results,
        "environment": environment(options, time.monotonic() - started, load_before),
    }
    write_json(options.output, document)
    progress(f"results written to {options.output} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
