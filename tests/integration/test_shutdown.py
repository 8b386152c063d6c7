"""A worker stopped by the operator (real git, real bubblewrap): its job goes back to the queue
without using an attempt, whether it stops at the drain grace, at once, or is killed and then
given back for it."""

from __future__ import annotations

import asyncio
import time

from reporun.config import Settings
from reporun.jobs import JobSpec, JobStatus, Limits
from reporun.store import Store
from tests.conftest import processes_with
from tests.harness.git import GitServer
from tests.harness.processes import require_tool
from tests.integration.conftest import Api, new_worker

LIMITS = Limits(timeout=60, memory=1 << 30, processes=64, log=1 << 20, disk=1 << 30)


async def _until(what: str, check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_stop_then_now_gives_the_job_back_at_once_without_an_attempt(
    settings: Settings, store: Store, api: Api, git_server: GitServer
) -> None:
    require_tool("bwrap", "the job sandbox")
    settings = settings.model_copy(update={"drain_grace": 60})
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho run starts\nsleep 3.4217\necho end\n"})
    job = await api.submit(repo=repo)
    worker = new_worker(settings, store)
    stop, now = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(worker.run(stop, now=now))

    async def started() -> bool:
        return b"run starts" in await api.log(job["id"])

    await _until("the job runs", started)
    stop.set()
    await asyncio.sleep(0.5)
    assert (await api.job(job["id"]))["status"] == "running"  # draining: the job goes on
    now.set()
    await asyncio.wait_for(running, 10)
    assert processes_with("sleep 3.4217") == []
    given_back = await api.job(job["id"])
    assert given_back["status"] == "queued" and given_back["attempts"] == 0, given_back

    # The next run is attempt 1, and its log is its own.
    again = new_worker(settings, store)
    stop_again = asyncio.Event()
    rerun = asyncio.create_task(again.run(stop_again))
    ended = await api.wait(job["id"], timeout=30)
    stop_again.set()
    await asyncio.wait_for(rerun, 30)
    assert ended["status"] == "succeeded" and ended["attempts"] == 1, ended
    log = (await api.log(job["id"])).decode()
    assert log.count("run starts") == 1 and log.count("end") == 1, log


async def test_the_drain_grace_gives_the_job_back_without_an_attempt(
    settings: Settings, store: Store, api: Api, git_server: GitServer
) -> None:
    require_tool("bwrap", "the job sandbox")
    settings = settings.model_copy(update={"drain_grace": 1})
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho run starts\nsleep 30\n"})
    job = await api.submit(repo=repo)
    worker = new_worker(settings, store)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))

    async def started() -> bool:
        return b"run starts" in await api.log(job["id"])

    await _until("the job runs", started)
    stop.set()
    await asyncio.wait_for(running, 15)
    given_back = await api.job(job["id"])
    assert given_back["status"] == "queued" and given_back["attempts"] == 0, given_back


async def test_jobs_of_stopped_workers_are_given_back_for_them(any_store: Store) -> None:
    from reporun.queue import QueueConfig
    from reporun.queue.sql import SqlQueue

    queue = SqlQueue(any_store, QueueConfig(lease_seconds=30, max_attempts=1))
    spec = JobSpec(repo="https://example.org/x.git", limits=LIMITS)
    ours = [await any_store.create_job(spec, "a") for _ in range(2)]
    theirs = await any_store.create_job(spec, "a")
    for worker in ("serve-1", "serve-2"):
        assert await queue.claim(worker) is not None
    assert (await queue.claim("elsewhere")) is not None
    held = await any_store.runs.held_by(["serve-1", "serve-2"])
    assert sorted(j.id for j in held) == sorted(j.id for j in ours)
    await any_store.cancel(ours[1].id)  # a cancel asked while it ran: it ends, not requeued

    released = await any_store.runs.release_workers(["serve-1", "serve-2", "gone"], "stopped")
    assert sorted(j.id for j in released) == sorted(j.id for j in ours)
    first = await any_store.get_job(ours[0].id)
    assert first.status is JobStatus.QUEUED and first.attempts == 0 and first.worker is None
    assert (await any_store.get_job(ours[1].id)).status is JobStatus.CANCELLED
    other = await any_store.get_job(theirs.id)
    assert other.status is JobStatus.RUNNING and other.attempts == 1
    # max_attempts is 1: a counted give-back would have ended it as `error`.
    again = await queue.claim("serve-3")
    assert again is not None and again.id == ours[0].id and again.attempts == 1
    assert await any_store.runs.release_workers([], "stopped") == []
