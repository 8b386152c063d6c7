"""reporun benchmarks: `make bench` (or `.venv/bin/python bench/run.py [--quick] [--jobs M]`).

Everything runs on this host, on loopback: a trivial repository (an executable run.sh that
echoes ok) served by `git daemon` over git://, and `reporun serve` started as a subprocess
with a fresh SQLite data dir for each measurement.

What is measured
  throughput     M jobs (default 60) submitted at once through POST /v1/jobs to
                 `reporun serve --workers N`, N = 1 and 2, after warm-up jobs have gone through
                 every worker; seconds from the first POST to the last job's finished_at.
                 Every job must succeed.
  floor loop     The cheapest hand-written loop (see bench/floor.py): the repository cached,
                 per job `git archive | tar` into a fresh directory and one plain bubblewrap
                 run, N lanes. reporun/floor is what the service costs over the least work.
  celery         Celery with Redis (this machine's, or BENCH_CELERY_REDIS) doing the hand
                 loop's work, N worker processes (see bench/celery_peer.py): reporun/celery.
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
  pg dashboard   (see bench/pg_dashboard.py) the jobs page, a job's page and the workers page
                 with --pg-rows jobs stored, --pg-requests each, signed in as a browser is;
                 target p95 < 50 ms. And --followers clients (default 200) following one
                 job's live log at once: the API's RSS and the database's connections.
  pg lease       one worker runs `sleep 5`, is SIGKILLed mid-job, another starts at once:
                 seconds from the kill until the job runs again (attempt 2) and until it
                 ends, with the default 30 s lease and with REPORUN_LEASE_SECONDS=5.
  pg kafka       (`--no-kafka` skips it; see bench/pg_kafka.py) the Kafka queue
                 (REPORUN_QUEUE=kafka, a fresh Tansu broker each time) against the SQL queue
                 with LISTEN/NOTIFY, 1 and 2 workers (--kafka-workers), in the same run: pg
                 dispatch's latency (--latency-jobs jobs) and, for Kafka, how many jobs came by
                 message and how many by the database hand-off, and the outbox relay's
                 created -> published; pg throughput's jobs/s (--pg-jobs jobs); kafka/sql.
CLI start-up (`--no-cli` skips it; see bench/cli_start.py): `reporun --help`, `reporun jobs`
and `reporun status ID` against `reporun serve`, each a fresh process, median of --cli-rounds
(default 15); `--cli-baseline PATH` times another reporun executable beside this checkout's
(`--cli-exe`), alternating, with the ratio baseline/this. Target: `jobs` under 0.3 s.
Runtimes (`--no-runtimes` skips it; see bench/runtimes.py): a trivial job's sandbox run on the
host's system and in an image runtime, alternating, median of --runtime-rounds (default 20),
with the ratio image/host; the image's root prepared from nothing, against a look-up of the
prepared root.
`--only cli` (or any of embedded,elastic,postgres,cli,runtimes) runs just those sections.
`--quick` runs each small (50 000 rows, 300 load jobs on 2 workers, pg throughput on 1 and 2
workers, the embedded throughput on 2 only, only a 2 s lease; for Kafka 6 dispatch and 20
throughput jobs).

The results are printed as a table, as one `summary:` line per figure, and written to
bench/results/latest.json. Exit status 1 when a job fails or a step times out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

# Run as `python bench/run.py`, Python puts bench/ on the path; the harness is under tests/.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import cli_start
import elastic
import pg_dashboard
import pg_kafka
import pg_listing
import pg_workloads
import pgcluster
import runtimes
from base import BenchError, git_repository, progress, serve, traversable_dir
from celery_peer import celery_throughput
from floor import floor_throughput
from hand import hand_throughput
from options import LATENCY_WORKERS, Options, parse_args
from report import environment, summary, table, write_json
from tests.harness import HarnessError
from tests.harness.postgres import Postgres
from workloads import dispatch_latency, reporun_throughput, submission_rate


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
            for lanes in options.parallelism:
                row, latency = await measure_throughput(options, root, repo, lanes)
                results["throughput"].append(row)
                if latency is not None:
                    results["dispatch_latency"] = latency
        if options.elastic:
            results["elastic"] = await measure_elastic(options, root / "elastic", repo)
        if options.postgres:
            results["postgres"] = await measure_postgres(options, root / "pg", repo)
        if options.cli:
            results["cli_start"] = await measure_cli(options, root, repo)
    if options.runtimes:
        async with bounded("runtimes", options.timeout + 5 * options.runtime_rounds):
            results["runtimes"] = await runtimes.measure(
                traversable_dir(root / "runtimes"), options.runtime_rounds
            )
    return results


async def measure_cli(options: Options, root: Path, repo: str) -> dict[str, Any]:
    executables = {"this": options.cli_exe}
    if options.cli_baseline is not None:
        executables = {"baseline": options.cli_baseline, **executables}
    # Each run well under a second, a few servers' worth of start-up around them.
    seconds = options.timeout + 3 * len(cli_start.COMMANDS) * options.cli_rounds
    async with bounded("cli start-up", seconds):
        return await cli_start.measure(root, repo, executables, options.cli_rounds)


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
            root, repo, options.burst_jobs, cooldown=1.0 if options.quick else None
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


async def measure_pg_dispatch(options: Options, server: Postgres, root: Path, repo: str) -> Any:
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


async def measure_pg_throughput(options: Options, server: Postgres, root: Path, repo: str) -> Any:
    rows = []
    for workers in options.pg_workers:
        progress(f"pg throughput: {options.pg_jobs} jobs, {workers} worker(s)")
        async with bounded(f"pg throughput with {workers} worker(s)", options.timeout):
            rows.append(await pg_workloads.throughput(server, root, repo, workers, options.pg_jobs))
    return rows


async def measure_pg_load(options: Options, server: Postgres, root: Path, repo: str) -> Any:
    jobs = options.pg_load_jobs
    progress(
        f"pg load: {jobs} jobs, {pg_workloads.SUBMITTERS} submitters, "
        f"{options.pg_load_workers} workers"
    )
    # At least 10 jobs/s, or it counts as stuck.
    async with bounded("pg load", options.timeout + jobs / 10):
        return await pg_workloads.load(server, root, repo, jobs, options.pg_load_workers)


async def measure_pg_listing(options: Options, server: Postgres, root: Path, repo: str) -> Any:
    progress(f"pg listing: {options.pg_rows} jobs in the table, {options.pg_requests} requests")
    async with bounded("pg listing", options.timeout + options.pg_rows / 10_000):
        return await pg_listing.listing(server, root, options.pg_rows, options.pg_requests)


async def measure_pg_dashboard(options: Options, server: Postgres, root: Path, repo: str) -> Any:
    progress(f"pg dashboard: {options.pg_rows} jobs in the table, {options.pg_requests} requests")
    result = {}
    async with bounded("pg dashboard pages", options.timeout + options.pg_rows / 10_000):
        result["pages"] = await pg_dashboard.pages(
            server, root, options.pg_rows, options.pg_requests
        )
    progress(f"pg dashboard: {options.followers} followers of one live log")
    async with bounded("pg dashboard followers", options.timeout):
        result["followers"] = await pg_dashboard.followers(
            server, root, repo, options.followers, lines=40 if options.quick else pg_dashboard.LINES
        )
    return result


async def measure_pg_lease(options: Options, server: Postgres, root: Path, repo: str) -> Any:
    rows = []
    for lease in options.pg_leases:
        label = f"{lease:g} s" if lease else "the default"
        progress(f"pg lease: a worker SIGKILLed mid-job, {label} lease")
        async with bounded(f"pg lease ({label})", options.timeout + 3 * (lease or 30.0)):
            rows.append(await pg_workloads.lease(server, root, repo, lease))
    return rows


async def measure_pg_kafka(options: Options, server: Postgres, root: Path, repo: str) -> Any:
    """Per worker count, the SQL queue then Kafka, each on a database (and broker) of its own."""
    root = traversable_dir(traversable_dir(root) / "kafka")
    counts = options.kafka_workers
    return {
        "dispatch": [await kafka_dispatch(options, server, root, repo, n) for n in counts],
        "throughput": [await kafka_throughput(options, server, root, repo, n) for n in counts],
    }


async def kafka_dispatch(
    options: Options, server: Postgres, root: Path, repo: str, workers: int
) -> dict[str, Any]:
    row: dict[str, Any] = {"workers": workers}
    for queue in pg_kafka.QUEUES:
        progress(
            f"pg kafka: dispatch latency ({queue}), {options.latency_jobs} jobs one at a time,"
            f" {workers} worker(s)"
        )
        async with bounded(f"pg kafka dispatch ({queue}, {workers} worker(s))", options.timeout):
            row[queue] = await pg_kafka.dispatch(
                server, root, repo, options.latency_jobs, workers, queue
            )
    for figure in ("p50", "p95"):
        row[f"ratio_{figure}"] = row["kafka"][figure] / max(row["sql"][figure], 1e-6)
    return row


async def kafka_throughput(
    options: Options, server: Postgres, root: Path, repo: str, workers: int
) -> dict[str, Any]:
    row: dict[str, Any] = {"workers": workers, "jobs": options.pg_jobs}
    for queue in pg_kafka.QUEUES:
        progress(f"pg kafka: throughput ({queue}), {options.pg_jobs} jobs, {workers} worker(s)")
        async with bounded(f"pg kafka throughput ({queue}, {workers} worker(s))", options.timeout):
            row[queue] = await pg_kafka.throughput(
                server, root, repo, workers, options.pg_jobs, queue
            )
    row["ratio"] = row["kafka"]["jobs_per_second"] / row["sql"]["jobs_per_second"]
    return row


PG_STEPS: dict[str, Callable[[Options, Postgres, Path, str], Awaitable[Any]]] = {
    "dispatch": measure_pg_dispatch,
    "throughput": measure_pg_throughput,
    "load": measure_pg_load,
    "listing": measure_pg_listing,
    "dashboard": measure_pg_dashboard,
    "lease": measure_pg_lease,
    "kafka": measure_pg_kafka,
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
    progress(f"floor loop: {options.jobs} jobs, {lanes} lane(s)")
    async with bounded(f"floor loop with {lanes} lane(s)", options.timeout):
        floor = await floor_throughput(
            root / f"floor-{lanes}", repo, options.jobs, lanes, options.warmup, options.rounds
        )
    progress(f"celery and redis: {options.jobs} jobs, {lanes} worker process(es)")
    async with bounded(f"celery with {lanes} process(es)", options.timeout):
        peer = await celery_throughput(
            root / f"celery-{lanes}", repo, options.jobs, lanes, options.warmup, options.rounds
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
        "floor_seconds": floor.seconds,
        "floor_jobs_per_second": floor.per_second,
        "floor_rounds_seconds": floor.rounds,
        "ratio_floor": served.per_second / floor.per_second,
        "celery_seconds": peer.seconds,
        "celery_jobs_per_second": peer.per_second,
        "celery_rounds_seconds": peer.rounds,
        "ratio_celery": served.per_second / peer.per_second,
        **{f"reporun_{key}": value for key, value in served.extra.items()},
    }
    return row, latency


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
    options = parse_args(argv, __doc__.split("\n\n")[0])
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
