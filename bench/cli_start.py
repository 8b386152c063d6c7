"""CLI start-up: how long `reporun --help`, `reporun jobs` and `reporun status ID` take, as a
person at a terminal waits for them, against a real `reporun serve` holding a few jobs.

Each command is a fresh process of the given reporun executable (its own virtualenv's
interpreter and packages), timed from spawn to exit; the same commands alternate between the
executables, round after round, so a burst of load on the machine hits them all alike. The
figures are the medians of the rounds: wall-clock seconds, and the CPU seconds (user + system)
of the process, which a loaded machine stretches far less. With a baseline executable
(`--cli-baseline`, e.g. a checkout of the code before a change) the table shows both and
baseline/this: above 1.0 means this one starts faster. Target: `reporun jobs` under 0.3 s.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from base import BenchError, progress, serve

TARGET = 0.3  # seconds for `reporun jobs`
JOBS = 5
COMMANDS = ("--help", "jobs", "status ID")


def _argv(executable: Path, command: str, job_id: str) -> list[str]:
    return [str(executable), *command.replace("ID", job_id).split()]


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock seconds from spawn to exit, and the CPU seconds (user + system) the process
    used: the second barely moves with the machine's load."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors
        )
        _, status, usage = os.wait4(process.pid, 0)
        took = time.perf_counter() - started
        process.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            errors.seek(0)
            shown = " ".join(argv)
            raise BenchError(f"{shown} exited {code}: {errors.read()[-500:].decode()}")
    return took, usage.ru_utime + usage.ru_stime


async def measure(
    root: Path, repo: str, executables: dict[str, Path], rounds: int
) -> dict[str, Any]:
    """{"rounds", "jobs", "executables": {label: path}, "seconds": {label: {command: [...]}}}
    for each executable in `executables` (label -> path), `rounds` runs of each command."""
    for label, path in executables.items():
        if not path.is_file():
            raise BenchError(f"no reporun executable for {label} at {path}")
    async with serve(root, "cli", workers=1) as server:
        async with server.client() as client:
            ids = [(await client.submit(repo))["id"] for _ in range(JOBS)]
            for job_id in ids:
                job = await client.wait(job_id, timeout=120)
                if job["status"] != "succeeded":
                    raise BenchError(f"job {job_id} ended {job['status']}: {job['reason']}")
        env = {**server.env, "REPORUN_TOKEN": server.token}
        seconds: dict[str, dict[str, list[float]]] = {
            label: {command: [] for command in COMMANDS} for label in executables
        }
        cpu: dict[str, dict[str, list[float]]] = {
            label: {command: [] for command in COMMANDS} for label in executables
        }
        progress(f"cli start-up: {rounds} rounds of {', '.join(COMMANDS)} for {len(ids)} jobs")
        labels = list(executables)
        for index in range(-1, rounds):  # round -1 warms up (bytecode, the page cache)
            order = labels if index % 2 == 0 else labels[::-1]
            for command in COMMANDS:
                for label in order:
                    argv = _argv(executables[label], command, ids[-1])
                    took, used = await asyncio.to_thread(_time, argv, env)
                    if index >= 0:
                        seconds[label][command].append(took)
                        cpu[label][command].append(used)
    return {
        "rounds": rounds,
        "jobs": len(ids),
        "executables": {label: str(path) for label, path in executables.items()},
        "seconds": seconds,
        "cpu_seconds": cpu,
        "median": _medians(seconds),
        "cpu_median": _medians(cpu),
    }


def _medians(runs: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    return {
        label: {command: statistics.median(values) for command, values in by_command.items()}
        for label, by_command in runs.items()
    }


def table(result: dict[str, Any]) -> list[str]:
    wall, cpu = result["median"], result["cpu_median"]
    labels = list(wall)
    compare = "baseline" in wall
    lines = [
        "",
        f"CLI start-up, median of {result['rounds']} runs against `reporun serve` with"
        f" {result['jobs']} jobs (target: jobs < {TARGET:.1f} s wall-clock):",
        "  "
        + f"{'command':<20}"
        + "".join(f"{label + ' wall':>15}{label + ' cpu':>15}" for label in labels)
        + ("  baseline/this wall  cpu" if compare else ""),
    ]
    for command in COMMANDS:
        row = f"  {'reporun ' + command:<20}"
        row += "".join(
            f"{wall[label][command]:>13.3f} s{cpu[label][command]:>13.3f} s" for label in labels
        )
        if compare:
            row += f"  {_ratio(wall, command):>17.1f}x {_ratio(cpu, command):>4.1f}x"
        lines.append(row)
    lines.append("  (wall: spawn to exit; cpu: user + system seconds of the process)")
    for label, path in result["executables"].items():
        lines.append(f"  {label}: {path}")
    return lines


def _ratio(median: dict[str, dict[str, float]], command: str) -> float:
    return median["baseline"][command] / max(median["this"][command], 1e-9)


def summary(result: dict[str, Any] | None) -> list[str]:
    if not result:
        return []
    wall, cpu = result["median"], result["cpu_median"]
    lines = []
    for command in COMMANDS:
        line = f"summary: cli_start command={command.replace(' ', '_')}"
        line += "".join(
            f" {label}={wall[label][command]:.3f} s cpu={cpu[label][command]:.3f} s"
            for label in wall
        )
        if "baseline" in wall:
            line += f" ratio={_ratio(wall, command):.1f} cpu_ratio={_ratio(cpu, command):.1f}"
        if command == "jobs":
            line += f" target={'met' if wall['this'][command] < TARGET else 'missed'}"
        lines.append(line)
    return lines
