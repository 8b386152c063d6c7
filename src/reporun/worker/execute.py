"""One job's run on a worker: check it out, choose what runs and in which runtime, run its
setup phase (or find what an earlier job kept of it), then its command, each in the sandbox;
the worker's loop (worker/loop.py) claims, watches and reports around it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from functools import partial
from ipaddress import IPv4Network
from pathlib import Path

from reporun.errors import CheckoutError, NotOffered
from reporun.jobs import Job, JobStatus, Limits, Outcome, Start
from reporun.queue import QueueBackend
from reporun.runtimes import Catalog
from reporun.tasks import unless
from reporun.worker.checkout import Mirrors
from reporun.worker.egress import EgressPolicy, egress_for
from reporun.worker.entrypoint import BadRepoConfig, NoEntryPoint, limits_with, pick_entry
from reporun.worker.names import names_for
from reporun.worker.netjail import refused_networks
from reporun.worker.output import LogWriter
from reporun.worker.process import RunResult
from reporun.worker.runtimes import RootStore
from reporun.worker.sandbox import Sandbox, World
from reporun.worker.setup import KEPT, Kept, NotKept, SetupCache, receive, setup_key

logger = logging.getLogger("reporun.worker")

NOT_OPEN = "network 'open' is not offered by this worker (REPORUN_NETWORK_OPEN is not set on it)"


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


@dataclass
class Watch:
    """What the side task learnt about a running job."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    held_until: float = 0.0
    cancel_requested: bool = False
    lease_lost: bool = False
    drained: bool = False
    # Seconds of each phase reached (reporun.jobs.WORKER_PHASES), reported with the end.
    phases: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SetupDone:
    """How a setup phase went: how the job ended if it did, the kept result (held), the
    phase's seconds, and whether its output was cut at the log limit."""

    ended: Outcome | None
    kept: Kept | None
    seconds: float
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Parts:
    """What a run uses of its worker."""

    worker_id: str
    queue: QueueBackend
    sandbox: Sandbox
    mirrors: Mirrors
    runtimes: Catalog
    roots: RootStore
    setups: SetupCache
    egress: EgressPolicy
    egress_dir: Path
    timeout_max: int
    open_network: bool = False
    open_refused: tuple[IPv4Network, ...] = ()


class Runner:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    async def execute(
        self, job: Job, workspace: Path, watch: Watch, log: LogWriter
    ) -> Outcome | None:
        """Check the job out, choose what runs and where, run its setup and its command;
        how it ended (None: it is not this worker's to report, lease lost or drained)."""
        if job.cancel_requested:  # cancelled while it was being given back to the queue
            watch.cancel_requested = True
            return outcome_of(None, watch, job.limits.timeout)
        checkout = self.parts.mirrors.checkout(
            job.repo,
            job.ref,
            workspace,
            fresh_since=job.created_at.timestamp(),
            max_bytes=job.limits.disk,
            local_sources=job.local_sources,
            timings=watch.phases,
        )
        try:
            commit = await unless(watch.stop, checkout)
            if commit is None:  # cancelled, or the lease is gone: stop cloning too
                return outcome_of(None, watch, job.limits.timeout)
            entry = pick_entry(workspace, job.command)
        except (CheckoutError, NoEntryPoint, BadRepoConfig) as exc:
            return Outcome(JobStatus.FAILED, reason=exc.message)
        try:
            limits = limits_with(
                job.limits, entry, timeout_max=self.parts.timeout_max, may_open=job.network_open
            )
            runtime = self.parts.runtimes.choose(job.runtime_requested, entry.runtime)
        except (NotOffered, BadRepoConfig) as exc:
            return Outcome(JobStatus.FAILED, reason=exc.message)
        if limits.network == "open" and not self.parts.open_network:
            return Outcome(JobStatus.FAILED, reason=NOT_OPEN)
        kept: Kept | None = None
        setup_cut = False  # the setup's output was cut at the log limit
        began = time.monotonic()
        held = await unless(watch.stop, self.parts.roots.hold(runtime))
        # An image runtime's root, fetched and unpacked the first time: fetched as the repo is.
        watch.phases["fetch"] = watch.phases.get("fetch", 0.0) + time.monotonic() - began
        try:
            if watch.stop.is_set():
                return outcome_of(None, watch, limits.timeout)
            root = held.root if held is not None else None
            setup = job.setup or entry.setup
            digest = root.digest if root else None
            # Written with the log's next chunk, the watch's next flush or the end record.
            log.begin(Start(commit, entry.command, runtime.name, digest, setup))
            world = World(root=root)
            if setup is not None:
                done = await self._setup(job, setup, workspace, limits, world, log, watch)
                watch.phases["setup"] = done.seconds
                kept, setup_cut = done.kept, done.truncated
                if done.ended is not None or watch.stop.is_set():
                    return done.ended or outcome_of(None, watch, limits.timeout)
                # The command has what is left of the job's time.
                limits = limits.model_copy(
                    update={"timeout": max(1, limits.timeout - math.ceil(done.seconds))}
                )
                world = replace(world, bring=kept.path if kept else None)
            mode, directory = limits.network, self.parts.egress_dir
            refused = partial(refused_networks, self.parts.open_refused)
            entered = time.monotonic()
            async with (
                egress_for(mode, self.parts.egress, directory, log.write) as egress,
                names_for(mode, refused, directory, log.write) as names,
            ):
                called = time.monotonic()
                result = await self.parts.sandbox.run(
                    workspace=workspace,
                    command=entry.command,
                    env=job.env,
                    limits=limits,
                    on_output=log.write,
                    stop=watch.stop,
                    world=replace(world, egress=egress, names=names),
                )
            ran = time.monotonic() - entered
            # Its network helpers, then the sandbox until the command starts; the rest is the
            # run (told by the sandbox; without it, all of the sandbox's time is the run).
            start = called - entered + (result.began or 0.0)
            watch.phases["sandbox_start"] = min(start, ran)
            watch.phases["run"] = max(0.0, ran - start)
        finally:
            if held is not None:
                held.release()
            if kept is not None:
                kept.release()
                if kept.only_now:  # too big to keep: it served this job
                    await asyncio.shield(self.parts.setups.discard(kept.path.parent))
        truncated = result.truncated or setup_cut
        ended = outcome_of(result, watch, limits.timeout)
        if ended is None:  # not this run's to end: what it printed is kept all the same
            await log.close(truncated=truncated)
        else:
            tail, begun = await log.tail(truncated=truncated)
            ended = replace(ended, tail=tail, start=begun)
        logger.info(
            "job ran",
            extra={
                "action": "ran",
                "worker": self.parts.worker_id,
                "job_id": str(job.id),
                "exit_code": result.exit_code,
                "seconds": round(result.seconds, 3),
            },
        )
        return ended

    async def _setup(
        self,
        job: Job,
        setup: str,
        workspace: Path,
        limits: Limits,
        world: World,
        log: LogWriter,
        watch: Watch,
    ) -> SetupDone:
        """The setup phase, or what an earlier job of the project kept of it."""
        digest = world.root.digest if world.root else None
        key = await asyncio.to_thread(
            lambda: setup_key(
                repo=job.repo, runtime_digest=digest, setup=setup, env=job.env, workspace=workspace
            )
        )
        began = time.monotonic()
        found = await unless(watch.stop, self.parts.setups.find(job.owner, key))
        if found is not None:
            seconds = time.monotonic() - began
            await log.write(
                f"reporun: setup skipped ({seconds:.2f} s): kept from an earlier job "
                f"({_megabytes(found.size)}); {setup}\n".encode()
            )
            return SetupDone(None, found, seconds)
        await log.write(f"reporun: setup (network registries): {setup}\n".encode())
        scratch = self.parts.setups.staging(job.owner, key)
        phase = limits.model_copy(update={"network": "registries"})
        read, write = os.pipe()
        receiving = asyncio.ensure_future(
            asyncio.to_thread(receive, read, scratch / KEPT, max_bytes=2 * limits.disk)
        )
        try:
            try:
                async with egress_for(
                    "registries", self.parts.egress, self.parts.egress_dir, log.write
                ) as egress:
                    ran = await self.parts.sandbox.run(
                        workspace=workspace,
                        command=setup,
                        env=job.env,
                        limits=phase,
                        on_output=log.write,
                        stop=watch.stop,
                        world=replace(world, egress=egress, keep=write),
                    )
            finally:
                os.close(write)  # the job is gone: the archive has ended
            try:
                size, not_kept = await receiving, None
            except NotKept as exc:
                size, not_kept = 0, exc
            seconds = time.monotonic() - began
            ended = outcome_of(ran, watch, limits.timeout)
            if ended is None or ended.status is not JobStatus.SUCCEEDED:  # how it ended first
                await self.parts.setups.discard(scratch)
                await log.close(truncated=ran.truncated)
                if ended is not None and ended.status is JobStatus.TIMED_OUT:
                    ended = replace(ended, reason=f"setup {ended.reason}")
                elif ended is not None and ended.status is not JobStatus.CANCELLED:
                    ended = replace(ended, reason=f"setup failed: {ended.reason}")
                return SetupDone(ended, None, seconds)
            if not_kept is not None:
                await self.parts.setups.discard(scratch)
                await log.write(f"reporun: {not_kept}\n".encode())
                await log.close(truncated=ran.truncated)
                failed = Outcome(JobStatus.FAILED, reason=f"setup failed: {not_kept}")
                return SetupDone(failed, None, seconds)
            kept = await self.parts.setups.keep(job.owner, key, scratch, size)
        except BaseException:
            # The writer is gone: the receiver ends soon; let it, then clear its directory.
            with contextlib.suppress(BaseException):
                await asyncio.shield(receiving)
            await asyncio.shield(self.parts.setups.discard(scratch))
            raise
        if kept is None:
            what = "nothing to keep"
        elif kept.only_now:
            what = f"{_megabytes(kept.size)} is more than this worker keeps: for this job only"
        else:
            what = f"kept {_megabytes(kept.size)} for the next jobs"
        await log.write(f"reporun: setup took {seconds:.2f} s; {what}\n".encode())
        return SetupDone(None, kept, seconds, truncated=ran.truncated)


def outcome_of(result: RunResult | None, watch: Watch, timeout: int) -> Outcome | None:
    """How a run ended, as the worker reports it (None: not this worker's to report)."""
    if watch.lease_lost or watch.drained:
        return None
    if watch.cancel_requested:
        return Outcome(JobStatus.CANCELLED, reason="cancelled while running")
    assert result is not None
    if result.timed_out:
        return Outcome(JobStatus.TIMED_OUT, reason=f"timed out after {timeout} s")
    code = result.exit_code
    if code == 0:
        return Outcome(JobStatus.SUCCEEDED, exit_code=0)
    if code is not None and code < 0:
        return Outcome(JobStatus.FAILED, exit_code=code, reason=f"killed by signal {-code}")
    return Outcome(JobStatus.FAILED, exit_code=code, reason=f"exit code {code}")
