"""The Kafka queue (REPORUN_QUEUE=kafka): PostgreSQL owns every job, Kafka hands jobs out.

- The API writes a job and its outbox row in one transaction (`Store.outbox`); the relay
  (reporun.queue.relay) publishes the row to the `jobs` topic.
- A worker reading a message claims that job's row (queued to running under the usual lease)
  and commits the offset right after; a message whose job is no longer queued (running, ended,
  cancelled, a duplicate) is skipped. A failed commit is harmless: the claim is in the database.
- While a job runs, the worker's partitions are paused and a task keeps polling, so a job of
  any length never exceeds `max_poll_interval` and never costs the worker its place in the
  group; partitions assigned by a rebalance meanwhile are paused too.
- An idle worker whose partitions have nothing for it also takes the oldest job queued longer
  than the hand-off time from PostgreSQL (the SQL queue's fair order), so no job waits behind a
  busy worker or for a broker that is away; its message is skipped when it arrives.
Everything after the claim (leases, heartbeats, reaping, fencing, retries) is the SQL queue's.
Imported only in Kafka mode (`wiring.build_queue`), after the check that aiokafka is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import replace
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition

from reporun.errors import BrokerError, ConfigError
from reporun.jobs import Job, JobSpec, Lease, Outcome, Start
from reporun.queue import QueueConfig, Transport
from reporun.queue.broker import KafkaConfig, consumer, ensure_topics, group_lag, ping, stop_client
from reporun.queue.sql import SqlQueue
from reporun.retry import compute_backoff, worth_logging
from reporun.store import Quota, Store

logger = logging.getLogger("reporun.queue")

# How often an idle worker asks PostgreSQL for a job its messages did not bring.
FALLBACK_EVERY = 0.5
# While a job runs: how long each keep-alive poll (of paused partitions) waits.
KEEPALIVE_POLL_MS = 1000
# A poll may wait this much longer than asked (a rebalance in progress, the broker away) before
# it is given up on, so an idle worker goes on to the database's hand-off.
FETCH_GRACE = 1.0
# The offset commit after a claim is best effort: the claim is in the database.
COMMIT_TIMEOUT = 1.0
# The lag /metrics shows is probed at most this often.
LAG_TTL = 10.0


def job_id_of(value: bytes | None) -> uuid.UUID | None:
    """The job a `jobs` message names, or None for a message that is not one of ours."""
    try:
        return uuid.UUID(str(json.loads(value or b"")["jobId"]))
    except (ValueError, KeyError, TypeError):
        return None


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka resets pauses on every assignment: pause again while a job runs."""

    def __init__(self, queue: KafkaQueue) -> None:
        self.queue = queue

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        logger.info(
            "partitions assigned",
            extra={"action": "assigned", "partitions": sorted(tp.partition for tp in assigned)},
        )
        if self.queue.busy and assigned:
            self.queue.consumer.pause(*assigned)


class KafkaQueue:
    check_name = "kafka"

    def __init__(self, store: Store, config: QueueConfig, kafka: KafkaConfig) -> None:
        if store.outbox is None:
            raise ConfigError("the Kafka queue needs a store that writes the outbox")
        self.store = store
        self.config = config
        self.kafka = kafka
        # The rows' side. Idle workers are woken by messages, not by LISTEN (its NOTIFYs on a
        # release or a reap go unheard).
        self.sql = SqlQueue(store, replace(config, notify=False))
        self.consumer: Any = None
        self.busy = False
        self._pending: Any = None  # a record fetched by `wait`, not yet looked at
        self._keepalive: asyncio.Task[None] | None = None
        self._next_fallback = 0.0
        self._next_connect = 0.0
        self._connect_failures = 0
        self.lag_ttl = LAG_TTL
        self._lag: tuple[float, dict[int, int] | None] | None = None
        self._lag_lock = asyncio.Lock()

    # The rows: as the SQL queue -----------------------------------------------------------
    async def submit(self, spec: JobSpec, owner: str, *, quota: Quota | None = None) -> Job:
        # The outbox row is written with the job; its NOTIFY wakes the relays.
        return await self.store.create_job(spec, owner, quota=quota)

    async def cancel(self, job_id: uuid.UUID, *, owner: str | None = None) -> Job:
        return await self.sql.cancel(job_id, owner=owner)

    async def get(self, job_id: uuid.UUID) -> Job:
        return await self.sql.get(job_id)

    async def check(self, job: Job, worker_id: str) -> Lease:
        return await self.sql.check(job, worker_id)

    async def renew(self, job: Job, worker_id: str) -> Lease:
        return await self.sql.renew(job, worker_id)

    async def started(self, job: Job, worker_id: str, start: Start) -> None:
        await self.sql.started(job, worker_id, start)

    async def finish(self, job: Job, worker_id: str, outcome: Outcome) -> Job | None:
        return await self.sql.finish(job, worker_id, outcome)

    async def release(
        self, job: Job, worker_id: str, reason: str, *, attempt_used: bool = True
    ) -> Job | None:
        return await self.sql.release(job, worker_id, reason, attempt_used=attempt_used)

    async def reap(self) -> int:
        return await self.sql.reap()

    async def ping(self) -> None:
        await ping(self.kafka)

    async def transport(self) -> Transport:
        backlog = await self.store.outbox_rows.backlog()
        return Transport(backlog.unpublished, backlog.oldest_age, await self._consumer_lag())

    async def _consumer_lag(self) -> dict[int, int] | None:
        """The workers' group's lag, probed at most every `lag_ttl` seconds (None: the broker
        did not tell)."""
        async with self._lag_lock:
            now = time.monotonic()
            if self._lag is None or now - self._lag[0] >= self.lag_ttl:
                try:
                    lag: dict[int, int] | None = await group_lag(self.kafka)
                except BrokerError:
                    lag = None
                self._lag = (time.monotonic(), lag)
            return self._lag[1]

    # Handing out -----------------------------------------------------------------------------
    async def claim(self, worker_id: str) -> Job | None:
        """The job of the next message that is still queued; else, now and then, the oldest
        job queued longer than the hand-off time. The worker is idle when it asks."""
        await self._idle()
        lease = self.sql.lease
        while (record := await self._next_record()) is not None:
            job_id = job_id_of(record.value)
            job = None
            if job_id is not None:
                job = await self.store.runs.claim(worker_id, lease=lease, job_id=job_id)
            else:
                logger.warning("skipped a message that names no job", extra={"action": "skip"})
            await self._commit(record)
            if job is not None:
                self._hold(job)
                return job
        now = time.monotonic()
        if now < self._next_fallback:
            return None
        self._next_fallback = now + FALLBACK_EVERY
        if not await self.store.runs.any_queued():
            return None
        job = await self.store.runs.claim(worker_id, lease=lease, queued_for=self.kafka.handoff)
        if job is not None:
            logger.info(
                "claimed from the database: its message had not reached a free worker",
                extra={"action": "handoff", "job_id": str(job.id), "worker": worker_id},
            )
            self._hold(job)
        return job

    async def wait(self, timeout: float) -> None:
        """Until a message arrives (kept for `claim`), or `timeout` seconds."""
        if self._pending is not None:
            return
        if await self._connected():
            self._pending = await self._fetch(timeout)
        else:
            await asyncio.sleep(min(timeout, FALLBACK_EVERY))

    async def close(self) -> None:
        await self._stop_keepalive()
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await stop_client(consumer)
        await self.sql.close()

    # The consumer ----------------------------------------------------------------------------
    async def _connected(self) -> bool:
        """The consumer, started (topics made sure of first); False while the broker is away,
        trying again with backoff."""
        if self.consumer is not None:
            return True
        if time.monotonic() < self._next_connect:
            return False
        candidate = consumer(self.kafka, self.kafka.group)
        try:
            await ensure_topics(self.kafka)
            await candidate.start()
            candidate.subscribe([self.kafka.jobs_topic], listener=_Rebalance(self))
        except Exception as exc:
            await stop_client(candidate)
            self._connect_failures += 1
            self._next_connect = time.monotonic() + compute_backoff(
                self._connect_failures, base=0.5, cap=10.0
            )
            if worth_logging(self._connect_failures):
                logger.warning(
                    "cannot reach Kafka; taking jobs from the database meanwhile",
                    extra={"action": "connect", "reason": f"{type(exc).__name__}: {exc}"},
                )
            return False
        self.consumer, self._connect_failures = candidate, 0
        logger.info("joined the consumer group", extra={"action": "connect"})
        return True

    async def _next_record(self) -> Any:
        record, self._pending = self._pending, None
        if record is None and await self._connected():
            record = await self._fetch(0)
        return record

    async def _fetch(self, timeout: float) -> Any:
        """One record, or None after about `timeout` seconds. Records are taken from the
        consumer's buffer only once it has them, so a poll cut off here loses none."""
        try:
            async with asyncio.timeout(timeout + FETCH_GRACE):
                found = await self.consumer.getmany(timeout_ms=int(timeout * 1000), max_records=1)
        except TimeoutError:
            return None  # a rebalance, or the broker away: the hand-off covers it
        except Exception as exc:
            logger.warning("poll failed", extra={"action": "poll", "reason": type(exc).__name__})
            return None
        for records in found.values():
            if records:
                return records[0]
        return None

    async def _commit(self, record: Any) -> None:
        tp = TopicPartition(record.topic, record.partition)
        try:
            await asyncio.wait_for(self.consumer.commit({tp: record.offset + 1}), COMMIT_TIMEOUT)
        except Exception as exc:
            # After a rebalance or with the broker away: the claim is in the database, and a
            # message delivered again is skipped.
            logger.info(
                "offset commit failed; harmless",
                extra={"action": "commit", "reason": type(exc).__name__},
            )

    def _hold(self, job: Job) -> None:
        """A job runs: pause every partition and keep polling, so the group keeps us."""
        self.busy = True
        if self.consumer is None:
            return
        with contextlib.suppress(Exception):
            self.consumer.pause(*self.consumer.assignment())
        self._keepalive = asyncio.create_task(self._keep_polling(), name=f"keepalive-{job.id}")

    async def _keep_polling(self) -> None:
        while True:
            record = await self._fetch(KEEPALIVE_POLL_MS / 1000)
            if record is not None and self._pending is None:
                # A partition not paused in time: keep its record for the next claim.
                self._pending = record
                with contextlib.suppress(Exception):
                    self.consumer.pause(*self.consumer.assignment())

    async def _stop_keepalive(self) -> None:
        task, self._keepalive = self._keepalive, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _idle(self) -> None:
        await self._stop_keepalive()
        if self.busy and self.consumer is not None:
            with contextlib.suppress(Exception):
                self.consumer.resume(*self.consumer.assignment())
        self.busy = False
