"""Celery with Redis doing reporun's work at the same parallelism: a `celery worker` with N
processes (prefork, one task at a time each, acks late) runs bench/celery_tasks.py's task, the
hand loop's job (a fresh clone and reporun's bubblewrap run); the bench sends M tasks at once
and waits for every result. Seconds from the first send to the last result."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from base import BenchError, progress, traversable_dir
from workloads import Throughput

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
REDIS = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/9")
READY_TIMEOUT = 60.0
TASK_TIMEOUT = 120.0


@contextlib.contextmanager
def celery_worker(root: Path, lanes: int, queue: str) -> Iterator[subprocess.Popen[bytes]]:
    """`celery worker` with `lanes` processes on `queue`, once it is ready; stopped on exit."""
    log = root / f"celery-{lanes}.log"
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{BENCH}",
        "BENCH_CELERY_REDIS": REDIS,
        "BENCH_CELERY_QUEUE": queue,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "celery_tasks",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(lanes),
                "--queues",
                queue,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "INFO",
            ],
            cwd=BENCH,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while b" ready." not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"celery worker did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _batch(work: Path, repo: str, jobs: int, queue: str) -> float:
    """Send `jobs` tasks, wait for each: seconds from the first send to the last result."""
    os.environ["BENCH_CELERY_REDIS"] = REDIS
    import celery_tasks

    traversable_dir(work)
    started = time.monotonic()
    sent = [
        celery_tasks.clone_and_run.apply_async((repo, str(work / f"job-{n}")), queue=queue)
        for n in range(jobs)
    ]
    for result in sent:
        result.get(timeout=TASK_TIMEOUT)
    return time.monotonic() - started


async def celery_throughput(
    work: Path, repo: str, jobs: int, lanes: int, warmup: int, rounds: int
) -> Throughput:
    traversable_dir(work)
    queue = f"reporun-bench-{secrets.token_hex(4)}"
    progress(f"celery peer: {lanes} worker process(es), Redis at {REDIS}")
    seconds = []
    with celery_worker(work, lanes, queue):
        await asyncio.to_thread(_batch, work / "warmup", repo, max(warmup, lanes), queue)
        for number in range(rounds):
            took = await asyncio.to_thread(_batch, work / f"round-{number}", repo, jobs, queue)
            seconds.append(took)
    return Throughput(lanes, jobs, seconds)
