"""The observer's view of the queue on both databases, its decisions, and the local scaler's
retirement of real `reporun worker` processes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from datetime import timedelta

import pytest

from reporun.config import Settings
from reporun.jobs import JobSpec, JobStatus, Limits
from reporun.observer.loop import Observer
from reporun.observer.policy import PolicySettings
from reporun.observer.scalers import LocalScaler
from reporun.queue import Outcome, QueueConfig
from reporun.queue.sql import SqlQueue
from reporun.store import Store
from tests.harness.git import GitServer
from tests.harness.processes import require_tool
from tests.integration.conftest import Api

LIMITS = Limits(timeout=60, memory=2**30, processes=64, log=2**20, disk=2**30, network=False)


def spec(repo: str = "https://example.org/a.git") -> JobSpec:
    return JobSpec(repo=repo, limits=LIMITS)


def sql_queue(store: Store) -> SqlQueue:
    return SqlQueue(
        store, QueueConfig(lease_seconds=30, max_attempts=3, poll_interval=0.05, notify=False)
    )


async def test_the_queue_snapshot_on_both_databases(any_store: Store) -> None:
    now = await any_store.now()
    old = await any_store.create_job(spec(), "alice", now=now - timedelta(seconds=8))
    await any_store.create_job(spec(), "bob", now=now - timedelta(seconds=2))
    queue = sql_queue(any_store)
    claimed = await queue.claim("w1")
    assert claimed is not None and claimed.id == old.id
    snapshot = await any_store.scaling.snapshot(window=60)
    assert (snapshot.queued, snapshot.running) == (1, 1)
    assert snapshot.busy_workers == {"w1": old.id}
    assert len(snapshot.waits) == 1 and 7.5 < snapshot.waits[0] < 12
    assert snapshot.oldest_queued_age is not None and 1.5 < snapshot.oldest_queued_age < 6
    # Outside the window the wait no longer counts.
    assert (await any_store.scaling.snapshot(window=0.001)).waits == []


async def test_a_requeued_job_waits_from_when_it_went_back(any_store: Store) -> None:
    """A job given back after 30 s (its worker stopped) waits again from then, in the
    observer's eyes; the job itself still tells its whole wait since it was created."""
    now = await any_store.now()
    old = await any_store.create_job(spec(), "alice", now=now - timedelta(seconds=30))
    queue = sql_queue(any_store)
    claimed = await queue.claim("w-gone")
    assert claimed is not None and claimed.id == old.id
    assert await queue.release(claimed, "w-gone", "its worker stopped") is not None
    back = await any_store.scaling.snapshot(window=60)
    assert back.queued == 1
    assert back.oldest_queued_age is not None and back.oldest_queued_age < 5
    again = await queue.claim("w2")
    assert again is not None and again.id == old.id
    snapshot = await any_store.scaling.snapshot(window=60)
    assert len(snapshot.waits) == 1 and snapshot.waits[0] < 5, snapshot.waits
    assert again.wait_seconds is not None and again.wait_seconds > 29


async def test_a_job_given_back_on_the_operators_stop_waits_from_then_too(
    any_store: Store,
) -> None:
    """The stop of `serve` gives jobs back without using an attempt (the worker's own drain, or
    serve for the workers it stopped): the observer counts their waits from then as well."""
    now = await any_store.now()
    first = await any_store.create_job(spec(), "alice", now=now - timedelta(seconds=30))
    second = await any_store.create_job(spec(), "bob", now=now - timedelta(seconds=30))
    queue = sql_queue(any_store)
    drained = await queue.claim("w-drained")
    stopped = await queue.claim("w-stopped")
    assert drained is not None and stopped is not None
    back = await queue.release(drained, "w-drained", "serve stopped", attempt_used=False)
    assert back is not None and back.attempts == 0
    [again] = await any_store.runs.release_workers(["w-stopped"], "serve stopped")
    assert again.attempts == 0
    assert {drained.id, stopped.id} == {first.id, second.id}
    snapshot = await any_store.scaling.snapshot(window=60)
    assert snapshot.queued == 2
    assert snapshot.oldest_queued_age is not None and snapshot.oldest_queued_age < 5


async def test_finished_jobs_are_read_in_order_once(any_store: Store) -> None:
    queue = sql_queue(any_store)
    start = await any_store.now()
    for owner in ("a", "b", "c"):
        await any_store.create_job(spec(), owner)
        job = await queue.claim("w1")
        assert job is not None
        await queue.finish(job, "w1", Outcome(JobStatus.SUCCEEDED, exit_code=0))
    until = await any_store.now() + timedelta(seconds=1)
    ended = await any_store.scaling.finished_between(start - timedelta(seconds=1), until)
    assert [j.owner for j in ended] == ["a", "b", "c"]
    assert all(j.wait_seconds is not None and j.run_seconds is not None for j in ended)
    assert await any_store.scaling.finished_between(ended[-1].finished_at, until) == []
    first_two = await any_store.scaling.finished_between(None, until, limit=2)
    assert [j.owner for j in first_two] == ["a", "b"]


async def test_decisions_are_kept_and_counted(any_store: Store) -> None:
    for direction, desired in (("out", 3), ("out", 4), ("in", 1)):
        await any_store.scaling.record(
            scaler="local",
            direction=direction,
            actual=2,
            desired=desired,
            reason="test",
            inputs={"queued": 5, "p95": 2.5},
        )
    newest = await any_store.scaling.decisions(limit=2)
    assert [d.desired for d in newest] == [1, 4]
    assert newest[1].inputs == {"queued": 5, "p95": 2.5}
    assert await any_store.scaling.counts() == {"out": 2, "in": 1}


def worker_env(settings: Settings) -> dict[str, str]:
    return {
        "REPORUN_DATA_DIR": str(settings.data_dir),
        "REPORUN_DATABASE_URL": settings.db_url,
        "REPORUN_ALLOWED_SCHEMES": "https,git",
        "REPORUN_TRUSTED_HOSTS": "127.0.0.1",
        "REPORUN_POLL_INTERVAL": "0.05",
        "REPORUN_DRAIN_GRACE": "1",  # a SIGTERM would give the job back after 1 s
        "REPORUN_LOG_LEVEL": "WARNING",
    }


async def test_a_retired_busy_worker_finishes_its_job_and_takes_no_other(
    settings: Settings, store: Store, api: Api, git_server: GitServer
) -> None:
    """Scale-in never picks a busy worker, but a worker may take a job between the pick and
    the signal: retired while it runs a job, it finishes the job (well past the drain grace a
    SIGTERM would give it), takes no other and exits 0."""
    require_tool("bwrap", "the job sandbox")
    scaler = LocalScaler(worker_env(settings), drain_grace=1)
    try:
        await scaler.add(1)
        repo = git_server.make_repo({"run.sh": "#!/bin/sh\nsleep 4\necho finished\n"})
        job = await api.submit(repo=repo)
        await api.wait(job["id"], {"running"}, timeout=30)
        [member] = await scaler.members()
        await scaler.retire([member.handle])
        [process] = scaler.retiring
        assert await scaler.members() == []
        later = await api.submit(repo=repo)
        done = await api.wait(job["id"], timeout=30)
        # A SIGTERM drain would have given the job back after 1 s: attempts 2.
        assert done["status"] == "succeeded" and done["attempts"] == 1, done
        assert b"finished" in await api.log(job["id"])
        assert await asyncio.wait_for(process.wait(), 15) == 0
        assert (await api.job(later["id"]))["status"] == "queued"
    finally:
        await scaler.close()


async def test_the_observer_keeps_the_minimum_and_logs_finished_jobs(
    settings: Settings,
    store: Store,
    api: Api,
    git_server: GitServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    require_tool("bwrap", "the job sandbox")
    scaler = LocalScaler(worker_env(settings), drain_grace=1)
    policy = PolicySettings(target_wait=1, min_workers=2, max_workers=2, cooldown=1)
    observer = Observer(
        store=store, queue=sql_queue(store), scaler=scaler, policy=policy, interval=0.2
    )
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="reporun.observer")
    running = asyncio.create_task(observer.run(stop))
    try:
        repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho hi\n"})
        job = await api.submit(repo=repo)
        assert (await api.wait(job["id"], timeout=30))["status"] == "succeeded"
        assert len(await scaler.members()) == 2
        # A worker that dies is replaced: the pool is below its minimum.
        victim = (await scaler.members())[0]
        os.kill(int(victim.handle), signal.SIGKILL)
        deadline = time.monotonic() + 15
        while True:
            handles = {m.handle for m in await scaler.members()}
            if len(handles) == 2 and victim.handle not in handles:
                break
            assert time.monotonic() < deadline, handles
            await asyncio.sleep(0.1)
        deadline = time.monotonic() + 10
        while not any(
            getattr(r, "job_id", None) == job["id"] and getattr(r, "action", "") == "job_finished"
            for r in caplog.records
        ):
            assert time.monotonic() < deadline, "no job_finished line"
            await asyncio.sleep(0.1)
        line = next(r for r in caplog.records if getattr(r, "job_id", None) == job["id"])
        assert line.status == "succeeded"  # type: ignore[attr-defined]
        assert line.wait_seconds >= 0 and line.run_seconds >= 0  # type: ignore[attr-defined]
        assert line.posted_at.startswith(job["created_at"][:19])  # type: ignore[attr-defined]
    finally:
        stop.set()
        await running
        await scaler.close()


async def test_workers_and_scaling_are_admin_only_and_show_the_truth(
    store: Store, api: Api
) -> None:
    for path in ("/v1/workers", "/v1/scaling"):
        assert (await api.client.get(path)).status_code == 401
        refused = await api.client.get(path, headers=api.headers("alice", "user"))
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")
    await store.worker_heartbeat("w-idle", host="h1", pid=10, state="idle", current_job=None)
    await store.worker_heartbeat("w-busy", host="h2", pid=11, state="idle", current_job=None)
    await store.create_job(spec(), "alice")
    claimed = await sql_queue(store).claim("w-busy")
    assert claimed is not None
    await store.scaling.record(
        scaler="local", direction="out", actual=1, desired=2, reason="wait", inputs={"queued": 1}
    )
    admin = api.headers("root", "admin")
    workers = {
        w["id"]: w for w in (await api.client.get("/v1/workers", headers=admin)).json()["items"]
    }
    # The heartbeat still says idle; the jobs table knows better.
    assert workers["w-busy"]["state"] == "busy"
    assert workers["w-busy"]["current_job"] == str(claimed.id)
    assert workers["w-idle"]["state"] == "idle" and workers["w-idle"]["current_job"] is None
    assert set(workers["w-idle"]) >= {"id", "host", "state", "current_job", "last_heartbeat"}
    report = (await api.client.get("/v1/scaling", headers=admin)).json()
    assert report["actual"] == 2 and report["desired"] == 2
    assert report["decisions"][0]["inputs"] == {"queued": 1}
    bad = await api.client.get("/v1/scaling?limit=0", headers=admin)
    assert bad.status_code == 422 and bad.json()["field"] == "limit"


async def test_a_requeued_old_job_does_not_drive_a_scale_out(
    settings: Settings, store: Store, api: Api, git_server: GitServer
) -> None:
    """A restart's re-queued job, created long ago, is no wait of new work: the pool holds.
    A job of a new burst that has waited as long does drive a scale-out."""
    require_tool("bwrap", "the job sandbox")
    scaler = LocalScaler(worker_env(settings), drain_grace=1)
    policy = PolicySettings(target_wait=5, min_workers=1, max_workers=4, cooldown=60)
    queue = SqlQueue(
        store, QueueConfig(lease_seconds=1, max_attempts=3, poll_interval=0.05, notify=False)
    )
    observer = Observer(store=store, queue=queue, scaler=scaler, policy=policy, interval=0.2)
    try:
        await scaler.add(1)
        busy = await api.submit(repo=git_server.make_repo({"run.sh": "#!/bin/sh\nsleep 30\n"}))
        await api.wait(busy["id"], {"running"}, timeout=30)  # the one worker is busy
        quick = git_server.make_repo({"run.sh": "#!/bin/sh\necho hi\n"}, name="quick")
        now = await store.now()
        old = await store.create_job(spec(quick), "bob", now=now - timedelta(seconds=30))
        lost = await queue.claim("w-lost")  # a worker that then dies: its lease runs out
        assert lost is not None and lost.id == old.id
        await asyncio.sleep(1.5)
        held = await observer.tick()  # takes the job back first, then decides
        assert (await store.get_job(old.id)).status is JobStatus.QUEUED
        assert (held.direction, held.desired) == ("hold", 1), held.reason
        assert held.signal is not None and held.signal < 5, held.reason
        assert held.reason.endswith("holding at 1"), held.reason
        # The control: a new job that has waited 30 s is over target.
        await store.create_job(spec(quick), "carol", now=now - timedelta(seconds=30))
        grown = await observer.tick()
        assert (grown.direction, grown.desired) == ("out", 3), grown.reason
        assert grown.reason.startswith("oldest queued job waiting 3"), grown.reason
        assert grown.reason.endswith("over the 5 s target with 2 queued: 1 -> 3"), grown.reason
    finally:
        await scaler.close()
