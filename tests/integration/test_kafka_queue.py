"""The Kafka queue in one process, against real PostgreSQL and a real Kafka-protocol broker
(Tansu): the outbox and its relay, claims by message, the hand-off from the database, and a
consumer that stays in its group while a job runs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from reporun.jobs import JobSpec, JobStatus, Limits, Outcome
from reporun.queue import QueueConfig
from reporun.queue.broker import KafkaConfig, ensure_topics
from reporun.queue.kafka import KafkaQueue
from reporun.queue.relay import Relay
from reporun.store import Store
from reporun.store.outbox import Outbox
from reporun.store.tables import outbox
from tests.harness.kafka import Broker

LIMITS = Limits(timeout=60, memory=1 << 30, processes=64, log=1 << 20, disk=1 << 30)
SPEC = JobSpec(repo="https://example.org/r.git", limits=LIMITS)


@dataclass
class Parts:
    store: Store
    kafka: KafkaConfig
    queues: list[KafkaQueue]
    stop: asyncio.Event

    def queue(self, **changes: float) -> KafkaQueue:
        config = QueueConfig(lease_seconds=5, max_attempts=2, poll_interval=0.05)
        made = KafkaQueue(self.store, config, replace(self.kafka, **changes))
        made.lag_ttl = 0  # every figure fresh
        self.queues.append(made)
        return made

    async def published(self) -> list[dict[str, object]]:
        async with self.store.engine.connect() as conn:
            rows = await conn.execute(sa.select(outbox).order_by(outbox.c.id))
            return [dict(row._mapping) for row in rows]


@pytest.fixture
async def parts(postgres_url: str, kafka: Broker) -> AsyncIterator[Parts]:
    store = Store.open(postgres_url, outbox=Outbox())
    config = KafkaConfig(
        bootstrap=kafka.bootstrap,
        partitions=4,
        session_timeout=3,
        rebalance_timeout=1,
        handoff=30,
    )
    made = Parts(store, config, [], asyncio.Event())
    yield made
    made.stop.set()
    for queue in made.queues:
        await queue.close()
    await store.close()


async def until(check: Callable[[], Awaitable[object]], timeout: float = 20) -> object:
    deadline = time.monotonic() + timeout
    while True:
        if found := await check():
            return found
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def claim_soon(queue: KafkaQueue, worker: str, timeout: float = 20) -> object:
    async def attempt() -> object:
        job = await queue.claim(worker)
        if job is None:
            await queue.wait(0.2)
        return job

    return await until(attempt, timeout)


async def test_a_job_goes_through_the_outbox_to_a_worker_and_its_end_to_results(
    parts: Parts,
) -> None:
    relay = Relay(parts.store, parts.kafka)
    relaying = asyncio.create_task(relay.run(parts.stop))
    queue = parts.queue()
    submitted = await queue.submit(SPEC, "alice")
    rows = await parts.published()
    assert [(r["topic"], r["payload"]["jobId"]) for r in rows] == [("jobs", str(submitted.id))]
    job = await claim_soon(queue, "w1")
    assert job.id == submitted.id and job.status is JobStatus.RUNNING and job.attempts == 1
    done = await queue.finish(job, "w1", Outcome(JobStatus.SUCCEEDED, exit_code=0))
    assert done is not None
    results = AIOKafkaConsumer(
        "results", bootstrap_servers=parts.kafka.bootstrap, auto_offset_reset="earliest"
    )
    await results.start()
    try:
        batches = await results.getmany(timeout_ms=10000)
        messages = [json.loads(r.value) for rs in batches.values() for r in rs]
    finally:
        await results.stop()
    assert [m["jobId"] for m in messages] == [str(job.id)]
    (message,) = messages
    assert message["status"] == "succeeded" and message["code"] == "Finished"
    assert message["timeJobPosted"] == int(done.created_at.timestamp() * 1000)
    assert message["timeWaited"] >= 0 and message["timeExecution"] >= 0
    await until(lambda: _all_published(parts))
    parts.stop.set()
    await relaying


async def _all_published(parts: Parts) -> bool:
    rows = await parts.published()
    return bool(rows) and all(r["published_at"] is not None for r in rows)


async def test_a_message_published_twice_runs_the_job_once(parts: Parts) -> None:
    relay = Relay(parts.store, parts.kafka)
    relaying = asyncio.create_task(relay.run(parts.stop))
    queue = parts.queue()
    submitted = await queue.submit(SPEC, "alice")
    await until(lambda: _all_published(parts))
    # The same message again, as a producer retry (or a second relay) would send it.
    async with parts.store.engine.begin() as conn:
        await conn.execute(sa.update(outbox).values(published_at=None))
    await until(lambda: _all_published(parts))
    producer = AIOKafkaProducer(bootstrap_servers=parts.kafka.bootstrap)
    await producer.start()
    await producer.send_and_wait("jobs", json.dumps({"jobId": str(submitted.id)}).encode())
    await producer.send_and_wait("jobs", b"not one of ours")
    await producer.stop()
    first = await claim_soon(queue, "w1")
    assert first.id == submitted.id
    other = parts.queue()
    # Every further delivery of the message is skipped: no second claim, by anyone.
    for _ in range(40):
        for q, w in ((queue, "w1"), (other, "w2")):
            assert await q.claim(w) is None
            await q.wait(0.05)
    job = await queue.get(submitted.id)
    assert (job.status, job.attempts, job.worker) == (JobStatus.RUNNING, 1, "w1")
    # Every message was read (and skipped), not left unread.
    lag = (await queue.transport()).consumer_lag
    assert lag is not None and sum(lag.values()) == 0, lag
    parts.stop.set()
    await relaying


async def test_the_api_killed_before_publishing_the_job_still_runs_once(parts: Parts) -> None:
    # Submitted with no relay running: the row and its outbox message are committed, the
    # message never reached the broker.
    queue = parts.queue(handoff=0.3)
    submitted = await queue.submit(SPEC, "alice")
    assert [r["published_at"] for r in await parts.published()] == [None]
    job = await claim_soon(queue, "w1")
    assert job.id == submitted.id and job.attempts == 1
    # A relay starting later publishes it; the worker that reads the message skips it.
    relaying = asyncio.create_task(Relay(parts.store, parts.kafka).run(parts.stop))
    await until(lambda: _all_published(parts))
    done = await queue.finish(job, "w1", Outcome(JobStatus.SUCCEEDED, exit_code=0))
    assert done is not None

    async def read_and_skipped() -> bool:
        assert await queue.claim("w1") is None
        await queue.wait(0.1)
        lag = (await queue.transport()).consumer_lag
        return lag is not None and sum(lag.values()) == 0

    await until(read_and_skipped)
    assert (await queue.get(submitted.id)).attempts == 1
    parts.stop.set()
    await relaying


async def test_the_api_accepts_jobs_while_the_broker_is_away(parts: Parts, kafka: Broker) -> None:
    kafka.kill()
    queue = parts.queue()
    relaying = asyncio.create_task(Relay(parts.store, parts.kafka).run(parts.stop))
    ids = {(await queue.submit(SPEC, f"user{n}")).id for n in range(3)}
    await asyncio.sleep(1)
    assert [r["published_at"] for r in await parts.published()] == [None] * 3
    kafka.start()
    await until(lambda: _all_published(parts), timeout=30)
    claimed = set()
    while claimed != ids:
        job = await claim_soon(queue, "w1")
        claimed.add(job.id)
        await queue.finish(job, "w1", Outcome(JobStatus.SUCCEEDED, exit_code=0))
    parts.stop.set()
    await relaying


async def test_a_busy_worker_stays_in_its_group_past_max_poll_interval(parts: Parts) -> None:
    relaying = asyncio.create_task(Relay(parts.store, parts.kafka).run(parts.stop))
    queue = parts.queue(max_poll_interval=2)
    await queue.submit(SPEC, "alice")
    job = await claim_soon(queue, "w1")
    consumer = queue.consumer
    member = consumer._coordinator.member_id
    assert consumer.paused() == consumer.assignment() != set()
    # A second worker joins while the job runs: the partitions it leaves us stay paused, and
    # the job it might read again is not queued.
    # (Its message may land on a partition the busy worker keeps: the hand-off takes it.)
    other = parts.queue(max_poll_interval=2, handoff=0.3)
    second = await queue.submit(SPEC, "bob")
    taken = await claim_soon(other, "w2")
    assert taken.id == second.id
    await asyncio.sleep(4)  # twice max_poll_interval, the worker busy all along
    assert consumer._coordinator.member_id == member
    assert consumer.paused() == consumer.assignment()
    assert (await queue.get(job.id)).status is JobStatus.RUNNING
    await queue.finish(job, "w1", Outcome(JobStatus.SUCCEEDED, exit_code=0))
    # Idle again: its partitions are read again.
    assert await queue.claim("w1") is None
    assert consumer.paused() == set()
    parts.stop.set()
    await relaying


async def test_topics_are_created_with_the_partitions_asked_for(parts: Parts) -> None:
    assert sorted(await ensure_topics(parts.kafka)) == ["jobs", "results"]
    assert await ensure_topics(parts.kafka) == []
    probe = AIOKafkaConsumer(bootstrap_servers=parts.kafka.bootstrap)
    await probe.start()
    try:
        topics = await probe.topics()
        assert {"jobs", "results"} <= topics
        assert probe.partitions_for_topic("jobs") == {0, 1, 2, 3}
    finally:
        await probe.stop()


async def test_the_outbox_backlog_and_the_consumer_lag_are_told(parts: Parts) -> None:
    queue = parts.queue()
    for owner in ("alice", "bob"):
        await queue.submit(SPEC, owner)
    before = await queue.transport()
    assert before.outbox_unpublished == 2 and before.outbox_oldest_age is not None
    relaying = asyncio.create_task(Relay(parts.store, parts.kafka).run(parts.stop))
    await until(lambda: _all_published(parts))
    published = await queue.transport()
    assert (published.outbox_unpublished, published.outbox_oldest_age) == (0, None)
    # (Tansu numbers offsets across a topic's partitions: only "some" and "none" are sure.)
    assert published.consumer_lag is not None and sum(published.consumer_lag.values()) >= 1
    assert set(published.consumer_lag) == {0, 1, 2, 3}
    await claim_soon(queue, "w1")
    await claim_soon(queue, "w2")
    taken = await queue.transport()
    assert taken.consumer_lag is not None and sum(taken.consumer_lag.values()) == 0
    parts.stop.set()
    await relaying
