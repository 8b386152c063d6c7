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
median (worth it before deciding anything on a few percent).

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
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import BenchError, git_daemon, make_repository, reporun_serve, traversable_dir
from workloads import (
    dispatch_latency,
    hand_throughput,
    reporun_throughput,
    submission_rate,
)

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
PARALLELISM = (1, 2)
LATENCY_WORKERS = 2


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
    args = parser.parse_args(argv)
    quick = bool(args.quick)
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
    )
    if min(options.jobs, options.latency_jobs, options.posts, options.clients, options.rounds) < 1:
        parser.error("--jobs, --latency-jobs, --posts, --clients and --repeat must be >= 1")
    return options


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


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
    base = traversable_dir(root / "git")
    await make_repository(base)
    results: dict[str, Any] = {"throughput": []}
    async with git_daemon(base) as repo:
        progress(f"serving {repo}")
        async with bounded("submissions", options.timeout):
            results["submissions"] = await measure_submissions(options, root, repo)
        for lanes in PARALLELISM:
            row, latency = await measure_throughput(options, root, repo, lanes)
            results["throughput"].append(row)
            if latency is not None:
                results["dispatch_latency"] = latency
    return results


async def measure_submissions(options: Options, root: Path, repo: str) -> dict[str, float]:
    progress(f"submissions: {options.posts} POSTs from {options.clients} clients, 0 workers")
    async with reporun_serve(root, "submit", workers=0) as server:
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
    async with reporun_serve(root, f"workers-{lanes}", workers=lanes) as server:
        async with bounded(f"reporun with {lanes} worker(s)", options.timeout):
            served = await reporun_throughput(server, repo, options.jobs, options.rounds)
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
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> str:
    lines = []
    for row in results["throughput"]:
        lines.append(
            f"summary: throughput parallelism={row['parallelism']}"
            f" reporun={row['reporun_jobs_per_second']:.2f} jobs/s"
            f" hand={row['hand_jobs_per_second']:.2f} jobs/s ratio={row['ratio']:.2f}"
        )
    latency = results["dispatch_latency"]
    lines.append(f"summary: dispatch_latency p50={latency['p50']:.3f} s p95={latency['p95']:.3f} s")
    lines.append(f"summary: submissions {results['submissions']['per_second']:.1f} per s")
    return "\n".join(lines)


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
    except BenchError as exc:
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
