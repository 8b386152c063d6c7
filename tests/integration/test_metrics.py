"""/metrics totals of ended jobs: what is settled is added up once and never counted twice."""

from __future__ import annotations

import asyncio

import pytest

from reporun.api.metrics import EndedJobs
from reporun.jobs import JobSpec, JobStatus, Limits
from reporun.queue import Outcome, QueueConfig
from reporun.queue.sql import SqlQueue
from reporun.store import Store

LIMITS = Limits(timeout=60, memory=1 << 30, processes=64, log=1 << 20, disk=1 << 30)
BUCKETS = (0.5, 5.0)


async def end_jobs(store: Store, queue: SqlQueue, statuses: list[JobStatus]) -> None:
    for status in statuses:
        await store.create_job(JobSpec(repo="https://example.org/x.git", limits=LIMITS), "a")
        job = await queue.claim("w")
        assert job is not None
        await queue.finish(job, "w", Outcome(status, exit_code=0))


async def test_settled_totals_plus_recent_ones_equal_a_full_count(any_store: Store) -> None:
    queue = SqlQueue(any_store, QueueConfig(lease_seconds=30, max_attempts=3, poll_interval=0.05))
    metrics = EndedJobs(BUCKETS, settle_seconds=0.2)
    await end_jobs(any_store, queue, [JobStatus.SUCCEEDED, JobStatus.FAILED])
    queued = await any_store.create_job(
        JobSpec(repo="https://example.org/x.git", limits=LIMITS), "b"
    )
    await any_store.cancel(queued.id)  # ended without running: counted, not timed
    first = await metrics.totals(any_store)
    assert first.finished == {"succeeded": 1, "failed": 1, "cancelled": 1}
    assert first.wait[2] == 2 and first.run[2] == 2
    await asyncio.sleep(0.3)  # those settle
    await end_jobs(any_store, queue, [JobStatus.SUCCEEDED, JobStatus.TIMED_OUT])
    for _ in range(3):  # repeated scrapes move jobs from recent to settled, never twice
        totals = await metrics.totals(any_store)
        full = await any_store.figures.ended_totals(BUCKETS)
        assert totals.finished == full.finished
        for mine, theirs in ((totals.wait, full.wait), (totals.run, full.run)):
            assert (mine[0], mine[2]) == (theirs[0], theirs[2])
            assert mine[1] == pytest.approx(theirs[1])
        await asyncio.sleep(0.25)
    assert totals.finished == {"succeeded": 2, "failed": 1, "cancelled": 1, "timed_out": 1}
    assert totals.wait[0][-1] == totals.wait[2] == 4  # every timed job within 5 s
    assert await any_store.figures.pending_counts() == {"queued": 0, "running": 0}


async def test_phase_histograms_count_each_phase_a_job_reached(any_store: Store) -> None:
    queue = SqlQueue(any_store, QueueConfig(lease_seconds=30, max_attempts=3, poll_interval=0.05))
    timed = {"fetch": 0.004, "checkout": 0.02, "sandbox_start": 0.03, "run": 2.0}
    for phases in (timed, {}):  # one ran; one had nothing timed
        await any_store.create_job(JobSpec(repo="https://example.org/x.git", limits=LIMITS), "a")
        job = await queue.claim("w")
        assert job is not None
        await queue.finish(job, "w", Outcome(JobStatus.SUCCEEDED, exit_code=0, phases=phases))
    found = await any_store.figures.phase_totals((0.005, 0.025, 5.0))
    assert list(found) == ["wait", "fetch", "checkout", "setup", "sandbox_start", "run", "report"]
    assert found["wait"][2] == 2  # both started
    assert found["fetch"] == ([1, 1, 1], pytest.approx(0.004), 1)
    assert found["checkout"] == ([0, 1, 1], pytest.approx(0.02), 1)
    assert found["setup"] == ([0, 0, 0], 0.0, 0)
    assert found["run"] == ([0, 0, 1], pytest.approx(2.0), 1)
    assert found["report"][2] == 2  # the rest of each run
    metrics = EndedJobs(BUCKETS, settle_seconds=0.0)
    assert (await metrics.totals(any_store)).phases["run"][2] == 1
