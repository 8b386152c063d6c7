"""The floor: the cheapest hand-written loop that does a job's work. The repository is already
cached (one bare mirror, cloned once before the clock starts); per job, `git archive | tar`
into a fresh directory, then one plain bubblewrap run of the command (the system read-only,
the checkout bound, every namespace unshared, no limits, no copy, no uid of its own), then the
directory removed. What no service can beat: reporun's cost is measured against it."""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path

from base import BenchError, gather_all, run_tool, traversable_dir
from workloads import COMMAND, Throughput

SYSTEM = ("/usr", "/etc")
LINKS = (("usr/bin", "/bin"), ("usr/lib", "/lib"), ("usr/lib64", "/lib64"), ("usr/sbin", "/sbin"))


def bwrap_argv(workspace: Path, command: str) -> list[str]:
    argv = ["bwrap"]
    for path in SYSTEM:
        argv += ["--ro-bind", path, path]
    for target, link in LINKS:
        argv += ["--symlink", target, link]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    argv += ["--bind", str(workspace), "/work", "--chdir", "/work"]
    argv += ["--unshare-all", "--die-with-parent", "--new-session", "--clearenv"]
    argv += ["--setenv", "PATH", "/usr/bin:/bin", "--", "/bin/sh", "-c", command]
    return argv


async def floor_job(mirror: Path, dest: Path) -> None:
    """`git archive HEAD | tar -x` into `dest`, the command in bubblewrap, `dest` removed."""
    try:
        dest.mkdir()
        await run_tool(
            ["sh", "-c", f'git --git-dir "{mirror}" archive HEAD | tar -x -C "{dest}"'], cwd=dest
        )
        output = await run_tool(bwrap_argv(dest, COMMAND), cwd=dest)
        if output != b"ok\n":
            raise BenchError(f"floor job printed {output!r}")
    finally:
        shutil.rmtree(dest, ignore_errors=True)


async def floor_throughput(
    work: Path, repo: str, jobs: int, lanes: int, warmup: int, rounds: int
) -> Throughput:
    """Per round, `jobs` floor jobs pulled by `lanes` concurrent loops: seconds for the set."""
    traversable_dir(work)
    mirror = work / "mirror.git"
    await run_tool(["git", "clone", "--quiet", "--mirror", repo, str(mirror)], cwd=work)
    await _lanes(mirror, work / "warmup", warmup, lanes)
    seconds = []
    for number in range(rounds):
        started = time.monotonic()
        await _lanes(mirror, work / f"round-{number}", jobs, lanes)
        seconds.append(time.monotonic() - started)
    return Throughput(lanes, jobs, seconds)


async def _lanes(mirror: Path, work: Path, jobs: int, lanes: int) -> None:
    traversable_dir(work)
    numbers = itertools.count()

    async def lane() -> None:
        while (number := next(numbers)) < jobs:
            await floor_job(mirror, work / f"job-{number}")

    await gather_all([lane() for _ in range(lanes)])
