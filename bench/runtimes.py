"""Runtimes (`--only runtimes`): what an image runtime costs a trivial job against the host's.

- run: the sandbox run of `echo ok` (reporun.worker.sandbox.Bubblewrap with reporun's default
  limits, a fresh copy of a small checkout each time) on the host's system and in an image
  runtime whose root is prepared, alternating, median and p95 of --runtime-rounds each; the
  ratio image/host.
- prepare: the image's root made from nothing (skopeo copy of an OCI archive, umoci unpack),
  once; and a job's look-up of a prepared root (skopeo inspect of the reference, then the
  prepared root found), median of 5.

The image is the tests' runtime image (tests/runtime_image.py: Debian with Python, built with
podman from a local base), as an OCI archive.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from tests.runtime_image import runtime_archive

from reporun.jobs import Limits
from reporun.runtimes import Runtime
from reporun.worker.runtimes import RootStore
from reporun.worker.sandbox import Bubblewrap

LIMITS = Limits(timeout=30, memory=1 << 30, processes=256, log=1 << 20, disk=64 << 20)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


async def _run_once(sandbox: Bubblewrap, workspace: Path, root: Any) -> float:
    output = bytearray()

    async def keep(chunk: bytes) -> None:
        output.extend(chunk)

    began = time.perf_counter()
    result = await sandbox.run(
        workspace=workspace,
        command="echo ok",
        env={},
        limits=LIMITS,
        on_output=keep,
        stop=asyncio.Event(),
        root=root,
    )
    seconds = time.perf_counter() - began
    if result.exit_code != 0 or b"ok" not in output:
        raise RuntimeError(f"the bench job failed: {bytes(output)[-300:]!r}")
    return seconds


async def measure(root: Path, rounds: int) -> dict[str, Any]:
    image = await asyncio.to_thread(runtime_archive)
    runtime = Runtime("bench", image)
    roots_dir = root / "roots"
    began = time.perf_counter()
    prepared = await RootStore(roots_dir).prepare(runtime)
    cold = time.perf_counter() - began
    lookups = []
    for _ in range(5):  # a fresh store each time: the digest is looked up again
        began = time.perf_counter()
        await RootStore(roots_dir).prepare(runtime)
        lookups.append(time.perf_counter() - began)
    workspace = root / "checkout"
    workspace.mkdir(mode=0o755)
    (workspace / "run.sh").write_text("#!/bin/sh\necho ok\n")
    sandbox = Bubblewrap()
    times: dict[str, list[float]] = {"host": [], "image": []}
    for _ in range(rounds):
        times["host"].append(await _run_once(sandbox, workspace, None))
        times["image"].append(await _run_once(sandbox, workspace, prepared))
    shutil.rmtree(roots_dir, ignore_errors=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "rounds": rounds,
        "median": median,
        "p95": {name: _p95(values) for name, values in times.items()},
        "ratio": median["image"] / median["host"],
        "prepare_cold": cold,
        "prepare_lookup": statistics.median(lookups),
    }


def table(result: dict[str, Any]) -> list[str]:
    median, p95 = result["median"], result["p95"]
    return [
        "",
        f"Runtimes: a trivial job's sandbox run, {result['rounds']} of each, alternating:",
        f"  {'runtime':<10}{'p50':>12}{'p95':>12}",
        *(f"  {name:<10}{median[name]:>10.3f} s{p95[name]:>10.3f} s" for name in median),
        f"  image/host p50: {result['ratio']:.2f}x",
        f"  root prepared from nothing: {result['prepare_cold']:.2f} s; a prepared root looked"
        f" up again: {result['prepare_lookup']:.3f} s (median of 5)",
    ]


def summary(result: dict[str, Any] | None) -> list[str]:
    if not result:
        return []
    median = result["median"]
    cold, lookup = result["prepare_cold"], result["prepare_lookup"]
    return [
        f"summary: runtimes run host={median['host']:.3f} s image={median['image']:.3f} s"
        f" ratio={result['ratio']:.2f}",
        f"summary: runtimes prepare cold={cold:.2f} s lookup={lookup:.3f} s"
        f" ratio={cold / lookup:.0f}",
    ]
