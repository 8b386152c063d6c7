"""What every benchmark shares: progress lines, BenchError, directories the jobs' uids may
traverse, and the harness's servers (tests/harness) as async context managers.

Every helper here is bounded (each wait has a timeout) and cleans up after itself: the context
managers stop what they started even when the body fails or is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.harness import HarnessError
from tests.harness.git import GIT_TIMEOUT, GitServer, git_env
from tests.harness.processes import Processes
from tests.harness.server import Server

from reporun.observer.policy import percentile

RUN_SH = "#!/bin/sh\necho ok\n"
STOP_GRACE = 20.0


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def stamp(value: str) -> float:
    """An RFC 3339 time from the API as seconds since the epoch."""
    return datetime.fromisoformat(value).timestamp()


class BenchError(HarnessError):
    """A benchmark could not run or a job did not succeed: report it and exit 1."""


def spread(values: list[float]) -> dict[str, float | None]:
    """p50, p95 (the observer's percentile: nearest rank) and max; None for no values."""
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values) if values else None,
    }


def traversable_dir(path: Path) -> Path:
    """A directory others may pass through but not list: the jobs' uids reach clones in it."""
    path.mkdir(mode=0o711, exist_ok=True)
    path.chmod(0o711)  # mkdir's mode is masked by the umask
    return path


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


@contextlib.asynccontextmanager
async def git_repository(root: Path) -> AsyncIterator[str]:
    """`git daemon` on loopback serving one repository whose executable run.sh says ok; its
    git:// URL."""
    with GitServer(traversable_dir(root / "git"), root / "git-work") as server:
        yield server.make_repo({"run.sh": RUN_SH}, name="repo")


@contextlib.asynccontextmanager
async def serve(
    root: Path,
    name: str,
    workers: int,
    *,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> AsyncIterator[Server]:
    """`reporun serve --workers N` on a free loopback port with its own data dir; stopped on
    exit. `args` go to the command line (`--min-workers` ...), `env` adds REPORUN_* settings."""
    processes = Processes()
    # Workspaces under the benchmark's temporary directory, so they go with it.
    settings = {"REPORUN_WORK_DIR": str(root / f"work-{name}"), **(env or {})}
    server = Server(processes, root / f"data-{name}", **settings)
    try:
        log = root / f"serve-{name}.log"
        await asyncio.to_thread(server.serve, log, "--workers", str(workers), *args)
        yield server
    finally:
        await asyncio.shield(asyncio.to_thread(processes.stop, STOP_GRACE))


async def run_tool(argv: list[str], *, cwd: Path) -> bytes:
    """A tool to its end (git's environment, a deadline): its output; BenchError with its end
    when it fails."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=git_env(cwd),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(GIT_TIMEOUT):
            out, _ = await process.communicate()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    if process.returncode != 0:
        raise BenchError(f"{argv[0]} exited {process.returncode}: {out[-800:]!r}")
    return out
