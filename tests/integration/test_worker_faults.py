"""The worker when its database misbehaves: it fences itself rather than run a job twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path

from reporun.config import Settings
from reporun.jobs import Job, JobStatus, Limits
from reporun.queue import Lease, QueueConfig
from reporun.queue.sql import SqlQueue
from reporun.store import Store
from reporun.worker.process import OutputSink, RunResult
from tests.harness.git import GitServer
from tests.integration.conftest import new_worker


class HangingRenewals(SqlQueue):
    """A database that stops answering lease renewals."""

    async def renew(self, job: Job, worker_id: str) -> Lease:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class WaitForStop:
    """Stands in for the sandbox: runs until told to stop, and says when that was."""

    name = "wait-for-stop"

    def __init__(self) -> None:
        self.stopped_after: float | None = None

    async def run(
        self,
        *,
        workspace: Path,
        command: str,
        env: Mapping[str, str],
        limits: Limits,
        on_output: OutputSink,
        stop: asyncio.Event,
        world: object = None,
    ) -> RunResult:
        started = time.monotonic()
        await on_output(b"running\n")
        await asyncio.wait_for(stop.wait(), 30)
        self.stopped_after = time.monotonic() - started
        return RunResult(None, False, True, 8, False, self.stopped_after)


async def test_a_hung_renewal_stops_the_run_before_the_lease_ends(
    settings: Settings, store: Store, git_server: GitServer
) -> None:
    settings = settings.model_copy(update={"lease_seconds": 1.5})
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\nsleep 60\n"})
    from reporun.jobs import JobSpec

    limits = Limits(timeout=60, memory=1 << 30, processes=64, log=1 << 20, disk=1 << 30)
    job = await store.create_job(JobSpec(repo=repo, limits=limits), "alice")
    queue = HangingRenewals(store, QueueConfig(lease_seconds=1.5, poll_interval=0.05))
    sandbox = WaitForStop()
    worker = new_worker(settings, store, queue=queue, sandbox=sandbox, worker_id="w1")
    claimed = await queue.claim("w1")
    assert claimed is not None and claimed.id == job.id
    await asyncio.wait_for(worker.process(claimed), 30)
    assert sandbox.stopped_after is not None and sandbox.stopped_after < 1.5
    # It reported nothing: the job is still the lost worker's until a reaper takes it back.
    assert (await store.get_job(job.id)).status is JobStatus.RUNNING
    await asyncio.sleep(1.6)
    assert await queue.reap() == 1
    assert (await store.get_job(job.id)).status is JobStatus.QUEUED
