"""Elasticity benchmarks: how fast the observer reacts, and what autoscaling buys on a burst.

reaction   `reporun serve --min-workers 1 --max-workers 4`: one long job holds the only
           worker, then one more job is submitted. Its wait crosses the target (2 s) at
           created_at + target; reaction = the moment a new worker claims it (started_at)
           minus that crossing. The same with the observer polling every 30 s
           (REPORUN_OBSERVE_INTERVAL=30, what KEDA's default pollingInterval does), in the
           same run: the ratio poll30/default is what polling costs.
burst      --burst-jobs jobs (default 200) of `sleep 0.5` submitted at once to a fixed single
           worker, a fixed pool of the maximum (4), and the autoscaled pool (1 to 4): seconds
           from the first POST to the last finished_at, and their ratios. Then, for the
           autoscaled pool, how long after the last job ended the pool was back at 1
           (REPORUN_SCALE_IN_COOLDOWN, 60 s by default; Kubernetes' HPA waits 300 s).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from base import BenchError, progress, serve, stamp
from tests.harness.client import Client
from tests.harness.server import Server
from workloads import require_succeeded, wait_idle

from reporun.jobs import TERMINAL
from reporun.observer.policy import percentile

TARGET = 2.0
MAX_WORKERS = 4
BURST_COMMAND = "sleep 0.5"
KEDA_POLL = 30.0
HPA_SCALE_IN = 300.0


async def _workers(client: Client) -> int:
    response = await client.http.get("/v1/workers")
    response.raise_for_status()
    return len(response.json()["items"])


async def _until_workers(client: Client, count: int) -> float:
    """Wait until exactly `count` workers are alive; returns when (time.time())."""
    while await _workers(client) != count:
        await asyncio.sleep(0.2)
    return time.time()


def _elastic_args(low: int, high: int) -> tuple[str, ...]:
    return ("--min-workers", str(low), "--max-workers", str(high))


async def reaction_once(root: Path, repo: str, name: str, env: dict[str, str]) -> float:
    settings = {"REPORUN_TARGET_WAIT": str(TARGET), **env}
    async with (
        serve(root, name, 1, args=_elastic_args(1, MAX_WORKERS), env=settings) as server,
        server.client() as client,
    ):
        await _until_workers(client, 1)
        blocker = (await client.submit(repo, command="sleep 120"))["id"]
        await client.wait(blocker, {"running"}, timeout=None)
        probe = await client.wait((await client.submit(repo, command="true"))["id"], timeout=None)
        await require_succeeded(client, [probe])
        if probe["worker"] == (await client.job(blocker))["worker"]:
            raise BenchError("the probe job ran on the blocked worker: no scale-out happened")
        crossed = stamp(probe["created_at"]) + TARGET
        await client.http.post(f"/v1/jobs/{blocker}/cancel")
        return stamp(probe["started_at"]) - crossed


async def reaction(root: Path, repo: str, rounds: int, *, compare: bool = True) -> dict[str, Any]:
    """`compare`: also measure with a 30 s poll (slow; --quick leaves it out)."""
    result: dict[str, Any] = {"target_wait": TARGET}
    modes: list[tuple[str, dict[str, str]]] = [("default", {})]
    if compare:
        modes.append(("poll30", {"REPORUN_OBSERVE_INTERVAL": str(KEDA_POLL)}))
    for label, env in modes:
        times = []
        for n in range(rounds):
            progress(f"elastic reaction ({label}), round {n + 1} of {rounds}")
            times.append(await reaction_once(root, repo, f"react-{label}-{n}", env))
        result[label] = {
            "rounds": times,
            "p50": percentile(times, 50),
            "max": max(times),
        }
    if compare:
        default = max(result["default"]["p50"], 1e-3)
        result["ratio_poll30_default"] = result["poll30"]["p50"] / default
    return result


async def _drain(server: Server, workers: int, repo: str, jobs: int) -> tuple[float, float, int]:
    """(seconds first POST -> last finished_at, the last finished_at, most workers seen)."""
    async with server.client() as client:
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, await _workers(client))
                await asyncio.sleep(0.25)

        await _until_workers(client, workers)
        watcher = asyncio.create_task(watch())
        started = time.time()
        burst = (client.submit(repo, command=BURST_COMMAND) for _ in range(jobs))
        ids = {job["id"] for job in await asyncio.gather(*burst)}
        await wait_idle(client)
        watcher.cancel()
        records = [r for r in await client.jobs() if r["id"] in ids]
        if len(records) != jobs or any(r["status"] not in TERMINAL for r in records):
            raise BenchError(f"{len(records)} of {jobs} burst jobs ended")
        await require_succeeded(client, records)
        if retried := [r["id"] for r in records if r["attempts"] != 1]:
            raise BenchError(f"jobs ran more than once: {retried[:5]}")
        last = max(stamp(r["finished_at"]) for r in records)
        return last - started, last, most


async def burst(
    root: Path, repo: str, jobs: int, *, cooldown: float | None = None
) -> dict[str, Any]:
    """`cooldown`: REPORUN_SCALE_IN_COOLDOWN for the autoscaled pool (default: the server's)."""
    result: dict[str, Any] = {"jobs": jobs, "command": BURST_COMMAND, "cooldown": cooldown}
    quiet = {"REPORUN_QUOTA_PER_MINUTE": "0", "REPORUN_QUOTA_PENDING": "0"}
    if cooldown is not None:
        quiet["REPORUN_SCALE_IN_COOLDOWN"] = str(cooldown)
    for label, workers, args in (
        ("fixed_1", 1, ()),
        (f"fixed_{MAX_WORKERS}", MAX_WORKERS, ()),
        ("autoscaled", 1, _elastic_args(1, MAX_WORKERS)),
    ):
        progress(f"elastic burst: {jobs} jobs, {label}")
        async with serve(root, f"burst-{label}", workers, args=args, env=quiet) as server:
            seconds, last, most = await _drain(server, workers, repo, jobs)
            row: dict[str, Any] = {"seconds": seconds, "most_workers": most}
            if args:
                progress("elastic burst: waiting for the pool to shrink back to 1")
                async with server.client() as client:
                    row["back_to_min_after"] = await _until_workers(client, 1) - last
            result[label] = row
    auto = result["autoscaled"]["seconds"]
    result["ratio_auto_fixed_1"] = auto / result["fixed_1"]["seconds"]
    result[f"ratio_auto_fixed_{MAX_WORKERS}"] = auto / result[f"fixed_{MAX_WORKERS}"]["seconds"]
    return result


def table(elastic: dict[str, Any]) -> list[str]:
    lines = ["", "elasticity (reporun serve, SQLite, local worker processes)"]
    if "reaction" in elastic:
        r = elastic["reaction"]
        line = (
            f"  reaction (wait over {r['target_wait']:g} s -> new worker claims): "
            f"p50 {r['default']['p50']:.2f} s, max {r['default']['max']:.2f} s"
        )
        if "poll30" in r:
            line += (
                f"; polling every {KEDA_POLL:g} s: p50 {r['poll30']['p50']:.2f} s "
                f"(x{r['ratio_poll30_default']:.1f})"
            )
        lines.append(line)
    if "burst" in elastic:
        b = elastic["burst"]
        for label in ("fixed_1", f"fixed_{MAX_WORKERS}", "autoscaled"):
            row = b[label]
            extra = ""
            if "back_to_min_after" in row:
                extra = f", back to 1 worker {row['back_to_min_after']:.0f} s after the last job"
            lines.append(
                f"  burst {b['jobs']} x `{b['command']}` {label:<10} {row['seconds']:7.1f} s "
                f"(most workers {row['most_workers']}){extra}"
            )
        lines.append(
            f"  autoscaled / fixed 1: {b['ratio_auto_fixed_1']:.2f}; autoscaled / fixed "
            f"{MAX_WORKERS}: {b[f'ratio_auto_fixed_{MAX_WORKERS}']:.2f}"
        )
    return lines


def summary(elastic: dict[str, Any]) -> list[str]:
    lines = []
    if "reaction" in elastic:
        r = elastic["reaction"]
        line = f"summary: elastic reaction p50 {r['default']['p50']:.2f} s"
        if "poll30" in r:
            line += (
                f" vs {r['poll30']['p50']:.2f} s polling every {KEDA_POLL:g} s"
                f" (ratio {r['ratio_poll30_default']:.1f})"
            )
        lines.append(line)
    if "burst" in elastic:
        b = elastic["burst"]
        auto = b["autoscaled"]
        lines.append(
            f"summary: elastic burst of {b['jobs']}: autoscaled {auto['seconds']:.1f} s, "
            f"fixed 1 {b['fixed_1']['seconds']:.1f} s (ratio {b['ratio_auto_fixed_1']:.2f}), "
            f"fixed {MAX_WORKERS} {b[f'fixed_{MAX_WORKERS}']['seconds']:.1f} s "
            f"(ratio {b[f'ratio_auto_fixed_{MAX_WORKERS}']:.2f}); back to 1 worker "
            f"{auto['back_to_min_after']:.0f} s after (HPA: {HPA_SCALE_IN:g} s)"
        )
    return lines
