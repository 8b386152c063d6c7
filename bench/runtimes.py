"""Runtimes (`--only runtimes`): what an image runtime costs a trivial job against the host's.

- run: the sandbox run of `echo ok` (reporun.worker.sandbox.Bubblewrap with reporun's default
  limits, a fresh copy of a small checkout each time) on the host's system and in an image
  runtime whose root is prepared, alternating, median and p95 of --runtime-rounds each; the
  ratio image/host.
- prepare: the image's root made from nothing (skopeo copy of an OCI archive, umoci unpack),
  once; and a job's look-up of a prepared root (skopeo inspect of the reference, then the
  prepared root found), median of 5.
- setup: a job with a setup phase in the image runtime (`python3 -m venv .venv`, which
  installs pip into it: what a dependency install costs without a network), its result kept,
  then the command using it; against a job whose setup result is found kept. Median of 3
  each, the whole of setup and command; the setup runs with network none here (the proxy
  adds nothing to what is measured).

- network: the same trivial job on the host's system in each network mode, alternating: `none`
  (no network namespace of reporun's own), `registries` (the namespace with the proxy's
  forwarder, and the proxy in the worker) and `open` (slirp4netns, its routes and netfilter
  rules, and the name server's relay); median of --runtime-rounds each, as ratios to `none`.
  Nothing connects anywhere.

The image is the tests' runtime image (tests/runtime_image.py: Debian with Python, built with
podman from a local base), as an OCI archive.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from tests.runtime_image import runtime_archive

from reporun.jobs import Limits
from reporun.runtimes import Runtime
from reporun.worker.egress import EgressPolicy, egress_dir, egress_for
from reporun.worker.names import names_for
from reporun.worker.netjail import refused_networks
from reporun.worker.runtimes import RootStore
from reporun.worker.sandbox import Bubblewrap, World
from reporun.worker.setup import KEPT, SetupCache, receive

LIMITS = Limits(timeout=30, memory=1 << 30, processes=256, log=1 << 20, disk=64 << 20)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


async def _run_once(
    sandbox: Bubblewrap,
    workspace: Path,
    root: Any,
    *,
    command: str = "echo ok",
    keep: int | None = None,
    bring: Path | None = None,
    check: bytes = b"ok",
    network: str = "none",
    sockets: Path | None = None,
) -> float:
    output = bytearray()

    async def collect(chunk: bytes) -> None:
        output.extend(chunk)

    limits = LIMITS.model_copy(update={"network": network})
    began = time.perf_counter()
    async with (
        egress_for(network, EgressPolicy(), sockets or workspace.parent, collect) as egress,
        names_for(network, refused_networks, sockets or workspace.parent, collect) as names,
    ):
        result = await sandbox.run(
            workspace=workspace,
            command=command,
            env={},
            limits=limits,
            on_output=collect,
            stop=asyncio.Event(),
            world=World(root=root, keep=keep, bring=bring, egress=egress, names=names),
        )
    seconds = time.perf_counter() - began
    if result.exit_code != 0 or check not in output:
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
    # Three of each (one in a smoke run of a few rounds).
    setup = await _setup_times(
        sandbox, workspace, prepared, root / "setups", rounds=3 if rounds >= 5 else 1
    )
    shutil.rmtree(roots_dir, ignore_errors=True)
    network = await _network_times(root, workspace, rounds)
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "rounds": rounds,
        "median": median,
        "p95": {name: _p95(values) for name, values in times.items()},
        "ratio": median["image"] / median["host"],
        "prepare_cold": cold,
        "prepare_lookup": statistics.median(lookups),
        "setup": setup,
        "network": network,
    }


async def _network_times(root: Path, workspace: Path, rounds: int) -> dict[str, float]:
    """The trivial job in each network mode, alternating: the median of each."""
    sandbox = Bubblewrap(open_network=True)
    modes = ["none", "registries"] + ([] if sandbox.open_problems() else ["open"])
    sockets = egress_dir(root / "work")  # a short enough path for a Unix socket
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode in modes:
            seconds = await _run_once(sandbox, workspace, None, network=mode, sockets=sockets)
            times[mode].append(seconds)
    return {mode: statistics.median(values) for mode, values in times.items()}


SETUP = "python3 -m venv .venv"
COMMAND = ".venv/bin/python -c 'print(\"ok\")'"


async def _setup_times(
    sandbox: Bubblewrap, workspace: Path, root: Any, directory: Path, *, rounds: int
) -> dict[str, float]:
    cache = SetupCache(directory)
    miss, hit = [], []
    for round_ in range(rounds):
        key = f"bench-{round_}"
        began = time.perf_counter()
        scratch = cache.staging("bench", key)
        read, write = os.pipe()  # as a worker does: the result comes out as a tar archive
        receiving = asyncio.ensure_future(
            asyncio.to_thread(receive, read, scratch / KEPT, max_bytes=1 << 30)
        )
        try:
            await _run_once(sandbox, workspace, root, command=SETUP, keep=write, check=b"")
        finally:
            os.close(write)
        kept = await cache.keep("bench", key, scratch, await receiving)
        assert kept is not None
        await _run_once(sandbox, workspace, root, command=COMMAND, bring=kept.path)
        miss.append(time.perf_counter() - began)
        kept.release()
        began = time.perf_counter()
        found = await cache.find("bench", key)
        assert found is not None
        await _run_once(sandbox, workspace, root, command=COMMAND, bring=found.path)
        hit.append(time.perf_counter() - began)
        found.release()
    shutil.rmtree(directory, ignore_errors=True)
    return {"miss": statistics.median(miss), "hit": statistics.median(hit), "rounds": rounds}


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
        f"  a job with setup ({SETUP}), run: {result['setup']['miss']:.2f} s; its result found"
        f" kept: {result['setup']['hit']:.3f} s (median of {result['setup']['rounds']} each)",
        "  network modes, the host's system, p50: "
        + ", ".join(
            f"{mode} {seconds:.3f} s ({seconds / result['network']['none']:.2f}x)"
            for mode, seconds in result["network"].items()
        ),
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
        f"summary: runtimes setup miss={result['setup']['miss']:.2f} s"
        f" hit={result['setup']['hit']:.3f} s"
        f" ratio={result['setup']['miss'] / result['setup']['hit']:.0f}",
        "summary: runtimes network "
        + " ".join(f"{mode}={seconds:.3f} s" for mode, seconds in result["network"].items())
        + " "
        + " ".join(
            f"{mode}/none={seconds / result['network']['none']:.2f}"
            for mode, seconds in result["network"].items()
            if mode != "none"
        ),
    ]
