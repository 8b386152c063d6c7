"""The queue contract, the same tests over every backend: leases, reaping, fairness, one end."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from reporun.config import Settings
from reporun.jobs import Job, JobSpec, JobStatus, Limits
from reporun.queue import Lease, Outcome, QueueBackend, QueueConfig
from reporun.queue.memory import MemoryQueue
from reporun.queue.sql import SqlQueue
from reporun.store import Store
from reporun.store.migrate import upgrade

LIMITS = Limits(timeout=60, memory=1 << 30, processes=64, log=1 << 20, disk=1 << 30)


def spec(n: int = 0) -> JobSpec:
    return JobSpec(repo=f"https://example.org/r{n}.git", limits=LIMITS)


@dataclass
class Backend:
    """A queue under test, with the calls a submitter makes (every backend the same way)."""

    queue: QueueBackend

    async def submit(self, owner: str = "alice", n: int = 0) -> Job:
        return await self.queue.submit(spec(n), owner)

    async def job(self, job_id: uuid.UUID) -> Job:
        return await self.queue.get(job_id)

    async def request_cancel(self, job_id: uuid.UUID) -> None:
        await self.queue.cancel(job_id)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Backend]:
    config = QueueConfig(lease_seconds=0.3, max_attempts=2, poll_interval=0.05)
    if request.param == "memory":
        yield Backend(MemoryQueue(config))
        return
    url = settings.db_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = Store.open(url)
    await upgrade(store.engine)
    queue = SqlQueue(store, config)
    yield Backend(queue)
    await queue.close()
    await store.close()


async def test_claim_takes_the_oldest_then_none(backend: Backend) -> None:
    first = await backend.submit(n=1)
    second = await backend.submit(n=2)
    claimed = await backend.queue.claim("w1")
    assert claimed is not None and claimed.id == first.id
    assert (claimed.status, claimed.attempts, claimed.worker) == (JobStatus.RUNNING, 1, "w1")
    again = await backend.queue.claim("w2")
    assert again is not None and again.id == second.id
    assert await backend.queue.claim("w3") is None


async def test_finish_writes_one_terminal_record(backend: Backend) -> None:
    await backend.submit()
    job = await backend.queue.claim("w1")
    assert job is not None
    done = await backend.queue.finish(job, "w1", Outcome(JobStatus.SUCCEEDED, exit_code=0))
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.finished_at
    # A redelivered report (or another worker's) changes nothing.
    assert await backend.queue.finish(job, "w1", Outcome(JobStatus.FAILED, exit_code=1)) is None
    assert await backend.queue.finish(job, "w2", Outcome(JobStatus.FAILED, exit_code=1)) is None
    assert (await backend.job(job.id)).status is JobStatus.SUCCEEDED


async def test_an_expired_lease_requeues_then_errors_past_max_attempts(backend: Backend) -> None:
    submitted = await backend.submit()
    first = await backend.queue.claim("lost-1")
    assert first is not None
    await asyncio.sleep(0.4)
    assert await backend.queue.reap() == 1
    assert (await backend.job(submitted.id)).status is JobStatus.QUEUED
    second = await backend.queue.claim("lost-2")
    assert second is not None and second.attempts == 2
    # The first worker comes back: it no longer holds the job and cannot report it.
    assert not (await backend.queue.renew(first, "lost-1")).held
    assert await backend.queue.finish(first, "lost-1", Outcome(JobStatus.SUCCEEDED)) is None
    await asyncio.sleep(0.4)
    assert await backend.queue.reap() == 1
    ended = await backend.job(submitted.id)
    assert ended.status is JobStatus.ERROR and "lost-2" in (ended.reason or "")


async def test_renewal_keeps_the_lease(backend: Backend) -> None:
    await backend.submit()
    job = await backend.queue.claim("w1")
    assert job is not None
    for _ in range(4):
        await asyncio.sleep(0.15)
        assert (await backend.queue.renew(job, "w1")).held
    assert await backend.queue.reap() == 0


async def test_cancel_of_a_running_job_is_seen_on_renewal(backend: Backend) -> None:
    submitted = await backend.submit()
    job = await backend.queue.claim("w1")
    assert job is not None
    await backend.request_cancel(submitted.id)
    lease = await backend.queue.renew(job, "w1")
    assert lease.held and lease.cancel_requested


async def test_check_tells_a_cancel_and_a_lost_job_without_renewing(backend: Backend) -> None:
    submitted = await backend.submit()
    job = await backend.queue.claim("w1")
    assert job is not None
    assert await backend.queue.check(job, "w1") == Lease(held=True, cancel_requested=False)
    assert not (await backend.queue.check(job, "w2")).held
    await backend.request_cancel(submitted.id)
    assert await backend.queue.check(job, "w1") == Lease(held=True, cancel_requested=True)
    await asyncio.sleep(0.4)  # a check is no renewal: the lease runs out
    assert await backend.queue.reap() == 1
    assert not (await backend.queue.check(job, "w1")).held


async def test_a_lost_worker_with_a_cancel_request_ends_cancelled(backend: Backend) -> None:
    submitted = await backend.submit()
    assert await backend.queue.claim("w1") is not None
    await backend.request_cancel(submitted.id)
    await asyncio.sleep(0.4)
    await backend.queue.reap()
    assert (await backend.job(submitted.id)).status is JobStatus.CANCELLED


async def test_release_is_a_platform_fault_retried(backend: Backend) -> None:
    submitted = await backend.submit()
    job = await backend.queue.claim("w1")
    assert job is not None
    released = await backend.queue.release(job, "w1", "sandbox failed")
    assert released is not None and released.status is JobStatus.QUEUED
    again = await backend.queue.claim("w2")
    assert again is not None and again.id == submitted.id and again.attempts == 2


async def test_a_job_given_back_on_a_stop_never_uses_an_attempt(backend: Backend) -> None:
    """The operator's shutdown, more times than the maximum attempts: queued each time as if
    never claimed, and the run that finally ends is attempt 1."""
    submitted = await backend.submit()
    for _ in range(backend.queue.config.max_attempts + 1):
        job = await backend.queue.claim("w1")
        assert job is not None and job.attempts == 1
        released = await backend.queue.release(job, "w1", "stopped", attempt_used=False)
        assert released is not None and released.status is JobStatus.QUEUED
        assert released.attempts == 0 and released.worker is None
    job = await backend.queue.claim("w2")
    assert job is not None and job.id == submitted.id and job.attempts == 1
    done = await backend.queue.finish(job, "w2", Outcome(JobStatus.SUCCEEDED, exit_code=0))
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.attempts == 1


async def test_a_stop_give_back_of_a_cancelled_job_ends_it(backend: Backend) -> None:
    submitted = await backend.submit()
    job = await backend.queue.claim("w1")
    assert job is not None
    await backend.request_cancel(submitted.id)
    released = await backend.queue.release(job, "w1", "stopped", attempt_used=False)
    assert released is not None and released.status is JobStatus.CANCELLED


async def test_one_owner_backlog_does_not_starve_another(backend: Backend) -> None:
    for n in range(200):
        await backend.submit("hoarder", n)
    for _ in range(5):
        assert await backend.queue.claim("w") is not None
    single = await backend.submit("newcomer")
    order = []
    for _ in range(3):
        job = await backend.queue.claim("w")
        assert job is not None
        order.append(job.id)
    assert single.id in order


async def test_fair_order_interleaves_owners(backend: Backend) -> None:
    for n in range(6):
        await backend.submit("a", n)
    for n in range(3):
        await backend.submit("b", n)
    owners = []
    while (job := await backend.queue.claim("w")) is not None:
        owners.append(job.owner)
    assert owners[:6] == ["a", "b", "a", "b", "a", "b"]
    assert owners.count("a") == 6 and owners.count("b") == 3


async def test_concurrent_claims_never_hand_out_a_job_twice(backend: Backend) -> None:
    for n in range(40):
        await backend.submit(f"owner{n % 3}", n)

    async def drain(worker: str) -> list[uuid.UUID]:
        got = []
        while (job := await backend.queue.claim(worker)) is not None:
            got.append(job.id)
        return got

    results = await asyncio.gather(*(drain(f"w{i}") for i in range(6)))
    claimed = [job_id for batch in results for job_id in batch]
    assert len(claimed) == 40 and len(set(claimed)) == 40


async def test_notify_wakes_a_worker_in_another_process_at_once(postgres_url: str) -> None:
    api_store, worker_store = Store.open(postgres_url), Store.open(postgres_url)
    try:
        api = SqlQueue(api_store, QueueConfig(lease_seconds=30, max_attempts=2, poll_interval=30))
        worker = SqlQueue(
            worker_store, QueueConfig(lease_seconds=30, max_attempts=2, poll_interval=30)
        )
        await worker.wait(0.01)  # starts listening
        waiting = asyncio.create_task(worker.wait(30))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        job = await api.submit(spec(), "alice")
        await asyncio.wait_for(waiting, 5)  # far less than the 30 s poll
        claimed = await worker.claim("w1")
        assert claimed is not None and claimed.id == job.id
        await worker.close()
    finally:
        await api_store.close()
        await worker_store.close()


async def test_without_notify_a_worker_polls(postgres_url: str) -> None:
    store = Store.open(postgres_url)
    try:
        queue = SqlQueue(
            store, QueueConfig(lease_seconds=30, max_attempts=2, poll_interval=0.05, notify=False)
        )
        started = asyncio.get_running_loop().time()
        await queue.wait(30)
        assert asyncio.get_running_loop().time() - started < 1
    finally:
        await store.close()


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
async def test_a_single_job_starts_within_a_few_claims_of_a_long_backlog(
    db: str, request: pytest.FixtureRequest, settings: Settings
) -> None:
    url = settings.db_url if db == "sqlite" else request.getfixturevalue("postgres_url")
    store = Store.open(url)
    try:
        await upgrade(store.engine)
        queue = SqlQueue(store, QueueConfig(lease_seconds=30, max_attempts=3, poll_interval=0.05))
        for n in range(500):
            await store.create_job(spec(n), "user-a")
        for _ in range(10):
            assert await queue.claim("w") is not None
        single = await store.create_job(spec(), "user-b")
        claims = []
        for _ in range(3):
            job = await queue.claim("w")
            assert job is not None
            claims.append(job.id)
        assert single.id in claims
    finally:
        await store.close()
