"""The embedded measurements (`reporun serve`): throughput, dispatch latency and the submission
rate, and the calls they share. Each returns plain figures; run.py prints and stores them."""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from base import BenchError, gather_all, stamp
from tests.harness.client import Client
from tests.harness.server import Server

from reporun.jobs import PHASES
from reporun.observer.policy import percentile

COMMAND = "./run.sh"


@dataclass
class Throughput:
    """`jobs` jobs at `lanes` parallelism, once per round; the median round counts."""

    lanes: int
    jobs: int
    rounds: list[float]  # seconds each round took
    extra: dict[str, float | None] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return statistics.median(self.rounds)

    @property
    def per_second(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


# Talking to reporun -------------------------------------------------------------------------
async def _count(client: Client, status: str) -> int:
    response = await client.http.get("/v1/jobs", params={"status": status, "limit": 1})
    response.raise_for_status()
    return len(response.json()["items"])


async def wait_idle(client: Client, poll: float = 0.25) -> None:
    """Until no job is queued or running (cheap queries, so polling barely loads the API).
    Like every wait here it has no deadline of its own: run.py bounds each phase."""
    while True:
        if not (await _count(client, "queued") or await _count(client, "running")):
            return
        await asyncio.sleep(poll)


async def require_succeeded(client: Client, records: list[dict[str, Any]]) -> None:
    """BenchError naming the first job that did not succeed, with the end of its log."""
    for record in records:
        if record["status"] != "succeeded":
            log = (await client.log(record["id"])).decode(errors="replace")
            raise BenchError(
                f"job {record['id']} {record['status']} (exit {record['exit_code']}, "
                f"reason {record['reason']!r}); log: {log[-500:]!r}"
            )


async def run_batch(client: Client, repo: str, count: int) -> tuple[float, list[dict[str, Any]]]:
    """Submit `count` jobs at once, wait until all ended; (wall time at first POST, records)."""
    started = time.time()
    ids = [(await client.submit(repo, command=COMMAND))["id"] for _ in range(count)]
    await wait_idle(client)
    wanted = set(ids)
    records = [r for r in await client.jobs() if r["id"] in wanted]
    if len(records) != count:
        raise BenchError(f"listed {len(records)} of the {count} jobs submitted")
    await require_succeeded(client, records)
    return started, records


# The measurements ---------------------------------------------------------------------------
async def warm_up(client: Client, workers: int, repo: str) -> None:
    """Run jobs until every worker has run one: the mirror is cloned, every worker process is
    up and past its first job, so the timed batch measures the steady state."""
    seen: set[str] = set()
    for _ in range(10):
        _, records = await run_batch(client, repo, 2 * workers)
        seen |= {r["worker"] for r in records}
        if len(seen) >= workers:
            return
    raise BenchError(f"only {len(seen)} of {workers} workers ran a warm-up job")


async def reporun_throughput(
    server: Server, workers: int, repo: str, jobs: int, rounds: int
) -> Throughput:
    """Per round, `jobs` jobs submitted at once: seconds from the first POST to the last
    finished_at. Also each job's run time (claimed -> finished: checkout, sandbox, reports)."""
    seconds: list[float] = []
    runs: list[float] = []
    timed: list[dict[str, Any]] = []
    async with server.client() as client:
        await warm_up(client, workers, repo)
        for _ in range(rounds):
            started, records = await run_batch(client, repo, jobs)
            seconds.append(max(stamp(r["finished_at"]) for r in records) - started)
            runs += [float(r["run_seconds"]) for r in records]
            timed += [r["phases"] for r in records]
    extra = {"run_seconds_p50": percentile(runs, 50), "run_seconds_p95": percentile(runs, 95)}
    for name in PHASES:  # where a job's time went: each phase's median
        values = [float(p[name]) for p in timed if p.get(name) is not None]
        extra[f"phase_{name}_p50"] = percentile(values, 50) if values else None
    return Throughput(workers, jobs, seconds, extra)


LATENCY_POLL = 0.005  # how often the single-job latency asks for the job


async def dispatch_latency(server: Server, repo: str, count: int) -> dict[str, float | None]:
    """One job at a time on idle workers: created_at -> started_at (`wait_seconds`), and the
    single-job latency a user sees: from the submit call returning until GET /v1/jobs/{id}
    shows it ended (asked every 5 ms).

    A random pause before each submission lets the workers fall idle and spreads the
    submissions over the phase of their polling."""
    waits: list[float] = []
    runs: list[float] = []
    latencies: list[float] = []
    async with server.client(poll=LATENCY_POLL) as client:
        for _ in range(count):
            await asyncio.sleep(random.uniform(0.1, 0.4))
            job = await client.submit(repo, command=COMMAND)
            submitted = time.monotonic()
            record = await client.wait(job["id"], timeout=None)
            latencies.append(time.monotonic() - submitted)
            await require_succeeded(client, [record])
            waits.append(float(record["wait_seconds"]))
            runs.append(float(record["run_seconds"]))
    return {
        "jobs": count,
        "p50": percentile(waits, 50),
        "p95": percentile(waits, 95),
        "max": max(waits),
        "run_seconds_p50": percentile(runs, 50),
        "latency_p50": percentile(latencies, 50),
        "latency_p95": percentile(latencies, 95),
    }


async def submission_rate(
    server: Server, repo: str, posts: int, clients: int
) -> dict[str, float | None]:
    """`posts` POST /v1/jobs from `clients` concurrent connections; nothing runs the jobs.
    The clock starts once every client has connected and made one untimed POST."""
    numbers = itertools.count()
    latencies: list[float] = []
    connected: list[float] = []
    go = asyncio.Event()

    async def client_loop() -> None:
        async with server.client() as client:
            await client.submit(repo, command=COMMAND)
            connected.append(time.monotonic())
            if len(connected) == clients:
                go.set()
            await go.wait()
            while next(numbers) < posts:
                begun = time.monotonic()
                await client.submit(repo, command=COMMAND)
                latencies.append(time.monotonic() - begun)

    await gather_all([client_loop() for _ in range(clients)])
    seconds = time.monotonic() - connected[-1]
    return {
        "posts": posts,
        "clients": clients,
        "seconds": seconds,
        "per_second": posts / seconds,
        "latency_p50": percentile(latencies, 50),
        "latency_p95": percentile(latencies, 95),
    }
