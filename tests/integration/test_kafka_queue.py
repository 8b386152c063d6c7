"""The Kafka queue in one process, against real PostgreSQL and a real Kafka-protocol broker
(Tansu): the outbox and its relay, claims by message, the hand-off from the database, and a
consumer that stays in its group while a job runs."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
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
