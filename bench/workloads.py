"""The measurements: reporun's throughput, the hand-written loop's, dispatch latency and the
submission rate. Each returns plain figures; run.py prints and stores them."""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import statistics
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from base import BenchError, Reporun, run_git, stamp, traversable_dir

from reporun.jobs import Limits
from reporun.worker.sandbox import Bubblewrap
from reporun.worker.uids import UidPool

TERMINAL = {"succeeded", "failed", "timed_out", "cancelled", "error"}
COMMAND = "./run.sh"
POLL = 0.05
# What reporun gives a job by default (Settings' *_default), for the hand loop's sandbox.
HAND_LIMITS = Limits(timeout=600, memory=1 << 30, processes=256, log=1 << 20, disk=1 << 30)


@dataclass
class Throughput:
    """`jobs` jobs at `lanes` parallelism, once per round; the median round counts."""

    lanes: int
    jobs: int
    rounds: list[float]  # seconds each round took
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return statistics.median(self.rounds)

    @property
    def per_second(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); q in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# Talking to reporun -------------------------------------------------------------------------
async def submit(http: httpx.AsyncClient, repo: str, command: str = COMMAND) -> str:
    response = await http.post("/v1/jobs", json={"repo": repo, "command": command})
    if response.status_code != 202:
        raise BenchError(f"POST /v1/jobs answered {response.status_code}: {response.text[:300]}")
    return str(response.json()["id"])


async def job(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await http.get(f"/v1/jobs/{job_id}")
    response.raise_for_status()
    return dict(response.json())


async def _count(http: httpx.AsyncClient, status: str) -> int:
    response = await http.get("/v1/jobs", params={"status": status, "limit": 1})
    response.raise_for_status()
    return len(response.json()["items"])


async def list_all(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every job, following the pages."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 500}
    while True:
        response = await http.get("/v1/jobs", params=params)
        response.raise_for_status()
        page = response.json()
        items += page["items"]
        if not page["next_cursor"]:
            return items
        params["cursor"] = page["next_cursor"]


async def wait_idle(http: httpx.AsyncClient, poll: float = 0.25) -> None:
    """Until no job is queued or running (cheap queries, so polling barely loads the API).
    Like every wait here it has no deadline of its own: run.py bounds each phase."""
    while True:
        if not (await _count(http, "queued") or await _count(http, "running")):
            return
        await asyncio.sleep(poll)


async def wait_job(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    while True:
        record = await job(http, job_id)
        if record["status"] in TERMINAL:
            return record
        await asyncio.sleep(POLL)


async def require_succeeded(http: httpx.AsyncClient, records: list[dict[str, Any]]) -> None:
    """BenchError naming the first job that did not succeed, with the end of its log."""
    for record in records:
        if record["status"] != "succeeded":
            response = await http.get(f"/v1/jobs/{record['id']}/logs")
            raise BenchError(
                f"job {record['id']} {record['status']} (exit {record['exit_code']}, "
                f"reason {record['reason']!r}); log: {response.text[-500:]!r}"
            )


async def run_batch(
    http: httpx.AsyncClient, repo: str, count: int
) -> tuple[float, list[dict[str, Any]]]:
    """Submit `count` jobs at once, wait until all ended; (wall time at first POST, records)."""
    started = time.time()
    ids = [await submit(http, repo) for _ in range(count)]
    await wait_idle(http)
    wanted = set(ids)
    records = [r for r in await list_all(http) if r["id"] in wanted]
    if len(records) != count:
        raise BenchError(f"listed {len(records)} of the {count} jobs submitted")
    await require_succeeded(http, records)
    return started, records


# The measurements ---------------------------------------------------------------------------
async def warm_up(http: httpx.AsyncClient, server: Reporun, repo: str) -> None:
    """Run jobs until every worker has run one: the mirror is cloned, every worker process is
    up and past its first job, so the timed batch measures the steady state."""
    seen: set[str] = set()
    for _ in range(10):
        _, records = await run_batch(http, repo, 2 * server.workers)
        seen |= {r["worker"] for r in records}
        if len(seen) >= server.workers:
            return
    raise BenchError(f"only {len(seen)} of {server.workers} workers ran a warm-up job")


async def reporun_throughput(server: Reporun, repo: str, jobs: int, rounds: int) -> Throughput:
    """Per round, `jobs` jobs submitted at once: seconds from the first POST to the last
    finished_at. Also each job's run time (claimed -> finished: checkout, sandbox, reports)."""
    seconds: list[float] = []
    runs: list[float] = []
    async with server.client() as http:
        await warm_up(http, server, repo)
        for _ in range(rounds):
            started, records = await run_batch(http, repo, jobs)
            seconds.append(max(stamp(r["finished_at"]) for r in records) - started)
            runs += [float(r["run_seconds"]) for r in records]
    extra = {"run_seconds_p50": percentile(runs, 50), "run_seconds_p95": percentile(runs, 95)}
    return Throughput(server.workers, jobs, seconds, extra)


async def dispatch_latency(server: Reporun, repo: str, count: int) -> dict[str, float]:
    """One job at a time on idle workers: created_at -> started_at (`wait_seconds`).

    A random pause before each submission lets the workers fall idle and spreads the
    submissions over the phase of their polling."""
    waits: list[float] = []
    runs: list[float] = []
    async with server.client() as http:
        for _ in range(count):
            await asyncio.sleep(random.uniform(0.1, 0.4))
            record = await wait_job(http, await submit(http, repo))
            await require_succeeded(http, [record])
            waits.append(float(record["wait_seconds"]))
            runs.append(float(record["run_seconds"]))
    return {
        "jobs": count,
        "p50": percentile(waits, 50),
        "p95": percentile(waits, 95),
        "max": max(waits),
        "run_seconds_p50": percentile(runs, 50),
    }


async def submission_rate(server: Reporun, repo: str, posts: int, clients: int) -> dict[str, float]:
    """`posts` POST /v1/jobs from `clients` concurrent connections; nothing runs the jobs.
    The clock starts once every client has connected and made one untimed POST."""
    numbers = itertools.count()
    latencies: list[float] = []
    connected: list[float] = []
    go = asyncio.Event()

    async def client_loop() -> None:
        async with server.client() as http:
            await submit(http, repo)
            connected.append(time.monotonic())
            if len(connected) == clients:
                go.set()
            await go.wait()
            while next(numbers) < posts:
                begun = time.monotonic()
                await submit(http, repo)
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


# The hand-written loop ----------------------------------------------------------------------
async def hand_job(sandbox: Bubblewrap, repo: str, dest: Path) -> None:
    """What a worker does, by hand: a fresh clone, the same bubblewrap run, remove the clone."""
    try:
        await run_git("clone", "--quiet", repo, str(dest), cwd=dest.parent)
        output = bytearray()

        async def collect(chunk: bytes) -> None:
            output.extend(chunk)

        result = await sandbox.run(
            workspace=dest,
            command=COMMAND,
            env={},
            limits=HAND_LIMITS,
            on_output=collect,
            stop=asyncio.Event(),
        )
        if result.exit_code != 0 or output != b"ok\n":
            raise BenchError(f"hand-loop job exited {result.exit_code}, output {bytes(output)!r}")
    finally:
        shutil.rmtree(dest, ignore_errors=True)


async def hand_throughput(
    work: Path, repo: str, jobs: int, lanes: int, warmup: int, rounds: int
) -> Throughput:
    """Per round, `jobs` hand jobs pulled by `lanes` concurrent loops: seconds for the set."""
    sandbox = Bubblewrap(UidPool(1_100_000, 65_536))
    traversable_dir(work)
    await _hand_lanes(sandbox, repo, work / "warmup", warmup, lanes)
    seconds = []
    for number in range(rounds):
        started = time.monotonic()
        await _hand_lanes(sandbox, repo, work / f"round-{number}", jobs, lanes)
        seconds.append(time.monotonic() - started)
    return Throughput(lanes, jobs, seconds)


async def _hand_lanes(sandbox: Bubblewrap, repo: str, work: Path, jobs: int, lanes: int) -> None:
    traversable_dir(work)
    numbers = itertools.count()

    async def lane() -> None:
        while (number := next(numbers)) < jobs:
            await hand_job(sandbox, repo, work / f"job-{number}")

    await gather_all([lane() for _ in range(lanes)])


async def gather_all(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Run all; the first failure cancels the others and is raised (so does a cancel)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if (error := task.exception()) is not None:
                raise error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
