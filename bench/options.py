"""What a benchmark run measures, and how much: the command line (see run.py)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import pg_listing

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
PARALLELISM = (1, 2)
LATENCY_WORKERS = 2
PG_WORKERS = (1, 2, 4)
PG_LOAD_WORKERS = 4
PG_MEASURES = ("dispatch", "throughput", "load", "listing", "dashboard", "lease", "kafka")
KAFKA_WORKERS = (1, 2)
SECTIONS = ("embedded", "elastic", "postgres", "cli", "runtimes")
# This checkout's reporun: the one next to the interpreter running the bench (.venv/bin).
CLI_EXE = Path(sys.executable).parent / "reporun"


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
    followers: int = 200
    pg_leases: tuple[float | None, ...] = (None, 5.0)
    pg_workers: tuple[int, ...] = PG_WORKERS
    # The embedded throughput's worker counts, and the pg load's workers.
    parallelism: tuple[int, ...] = PARALLELISM
    pg_load_workers: int = PG_LOAD_WORKERS
    kafka_workers: tuple[int, ...] = KAFKA_WORKERS
    cli: bool = True
    cli_rounds: int = 15
    cli_exe: Path = CLI_EXE
    cli_baseline: Path | None = None
    runtimes: bool = True
    runtime_rounds: int = 20


def parse_args(argv: list[str], description: str) -> Options:
    parser = argparse.ArgumentParser(description=description)
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
    parser.add_argument(
        "--followers", type=int, help="clients following one live log at once (default 200)"
    )
    parser.add_argument(
        "--kafka",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the Kafka queue against the SQL queue (a PostgreSQL measurement; Tansu as broker)",
    )
    parser.add_argument(
        "--kafka-workers",
        metavar="COUNTS",
        help="comma-separated worker counts of the Kafka comparison (default 1,2)",
    )
    parser.add_argument(
        "--cli",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the CLI's start-up (reporun --help, jobs, status ID)",
    )
    parser.add_argument("--cli-rounds", type=int, help="runs of each CLI command (default 15)")
    parser.add_argument(
        "--cli-exe", type=Path, default=CLI_EXE, help=f"the reporun to time (default {CLI_EXE})"
    )
    parser.add_argument(
        "--cli-baseline",
        type=Path,
        help="another reporun executable (e.g. the code before a change) timed beside it",
    )
    parser.add_argument(
        "--runtimes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a trivial job on the host's system against one in an image runtime",
    )
    parser.add_argument("--runtime-rounds", type=int, help="runs of each (default 20)")
    parser.add_argument(
        "--only",
        metavar="SECTIONS",
        help=f"comma-separated sections to run, the others skipped: {','.join(SECTIONS)}",
    )
    args = parser.parse_args(argv)
    if args.only is not None:
        chosen = {name.strip() for name in args.only.split(",")}
        if unknown := chosen - set(SECTIONS):
            parser.error(f"--only: unknown {sorted(unknown)}; choose from {','.join(SECTIONS)}")
        for name in SECTIONS:
            setattr(args, name, name in chosen)
    quick = bool(args.quick)
    measures = tuple(m.strip() for m in (args.pg_only or ",".join(PG_MEASURES)).split(","))
    if unknown := set(measures) - set(PG_MEASURES):
        parser.error(f"--pg-only: unknown {sorted(unknown)}; choose from {','.join(PG_MEASURES)}")
    if not args.kafka:
        measures = tuple(m for m in measures if m != "kafka")
    if args.postgres and not measures:
        parser.error("--no-kafka leaves no PostgreSQL measurement: add --no-postgres")
    try:
        kafka_workers = tuple(
            int(n) for n in (args.kafka_workers or ",".join(map(str, KAFKA_WORKERS))).split(",")
        )
    except ValueError:
        parser.error(f"--kafka-workers: not a list of numbers: {args.kafka_workers}")
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
        burst_jobs=args.burst_jobs or (8 if quick else 200),
        reaction_rounds=1 if quick else 3,
        postgres=bool(args.postgres),
        pg_measures=measures,
        pg_jobs=args.pg_jobs or (20 if quick else 200),
        pg_load_jobs=args.pg_load_jobs or (300 if quick else 10_000),
        pg_rows=args.pg_rows or (50_000 if quick else 1_000_000),
        pg_requests=args.pg_requests or (40 if quick else 200),
        followers=args.followers or (20 if quick else 200),
        pg_leases=(2.0,) if quick else (None, 5.0),
        pg_workers=(1, 2) if quick else PG_WORKERS,
        # A smoke run takes each path once: 2 workers run the code 1 would, and more.
        parallelism=(2,) if quick else PARALLELISM,
        pg_load_workers=2 if quick else PG_LOAD_WORKERS,
        kafka_workers=kafka_workers,
        cli=bool(args.cli),
        cli_rounds=args.cli_rounds or (3 if quick else 15),
        cli_exe=args.cli_exe,
        cli_baseline=args.cli_baseline,
        runtimes=bool(args.runtimes),
        runtime_rounds=args.runtime_rounds or (3 if quick else 20),
    )
    counts = (options.jobs, options.latency_jobs, options.posts, options.clients, options.rounds)
    if (
        min(
            *counts,
            options.pg_jobs,
            options.pg_load_jobs,
            options.pg_requests,
            options.followers,
            options.burst_jobs,
            options.cli_rounds,
            *options.kafka_workers,
        )
        < 1
    ):
        parser.error(
            "--jobs, --latency-jobs, --posts, --clients, --repeat, --pg-*, --kafka-workers and"
            " --cli-rounds must be >= 1"
        )
    if options.pg_rows < 2 * pg_listing.CURSOR_DEPTH * pg_listing.LISTING_PAGE:
        parser.error("--pg-rows must be at least 2000 (20 pages deep for the light user too)")
    if not (
        options.embedded or options.postgres or options.elastic or options.cli or options.runtimes
    ):
        parser.error(
            "--no-embedded, --no-elastic, --no-postgres, --no-cli and --no-runtimes leave nothing"
        )
    return options
