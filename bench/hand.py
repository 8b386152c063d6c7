"""The hand-written loop reporun is measured against: per job a fresh `git clone`, the very
bubblewrap run reporun uses (with reporun's default limits), the clone removed. No HTTP, no
database, no queue, no mirror cache."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import time
from pathlib import Path

from base import BenchError, gather_all, run_tool, traversable_dir
from workloads import COMMAND, Throughput

from reporun.jobs import Limits
from reporun.worker.sandbox import Bubblewrap

# What reporun gives a job by default (Settings' *_default), for the hand loop's sandbox.
HAND_LIMITS = Limits(timeout=600, memory=1 << 30, processes=256, log=1 << 20, disk=1 << 30)


async def clone(repo: str, dest: Path) -> None:
    """`git clone` without blocking the loop (the lanes clone at once)."""
    await run_tool(["git", "clone", "--quiet", repo, str(dest)], cwd=dest.parent)


async def hand_job(sandbox: Bubblewrap, repo: str, dest: Path) -> None:
    """What a worker does, by hand: a fresh clone, the same bubblewrap run, remove the clone."""
    try:
        await clone(repo, dest)
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
    sandbox = Bubblewrap()
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
