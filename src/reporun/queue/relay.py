"""The outbox relay (Kafka mode), run in every API replica: it takes unpublished outbox rows
with `FOR UPDATE SKIP LOCKED` (so replicas share the work and never wait on each other),
publishes them with acks=all, and marks them published in the same transaction only after the
broker acked. A NOTIFY wakes it when a row is added; polling backs that up. While the broker is
away it keeps the rows and tries again, with backoff; a topic the broker lost is created again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from reporun.queue.broker import KafkaConfig, ensure_topics, start_producer, stop_client
from reporun.retry import compute_backoff, worth_logging
from reporun.store import Store
from reporun.store.dialect import OUTBOX_CHANNEL, Listener
from reporun.tasks import wait_any

logger = logging.getLogger("reporun.relay")

BATCH = 200
# With LISTEN working, how often the relay looks anyway (a lost notification, another
# replica's rows left behind when it died mid-batch).
POLL = 1.0
# Published rows are kept this long (to look at), then pruned.
KEEP_PUBLISHED = 3600.0
# How often the topics are checked for a broker that came back without them.
TOPIC_CHECK = 10.0


PRUNE_EVERY = 60.0


class Relay:
    def __init__(self, store: Store, config: KafkaConfig) -> None:
        self.store = store
        self.config = config
        self._wakeup = asyncio.Event()
        self._listener = Listener(store.engine, self._wakeup.set, OUTBOX_CHANNEL)
        self._producer: Any = None
        self._checked = 0.0  # when the topics were last made sure of
        self._pruned = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        try:
            while not stop.is_set():
                # Cleared before the batch is taken: a row added meanwhile wakes the next round.
                self._wakeup.clear()
                try:
                    await self._connect()
                    more = await self.publish_once()
                    failures, pause = 0, 0.0 if more else POLL
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    if worth_logging(failures):
                        logger.warning(
                            "relay cannot publish; the rows wait in the outbox",
                            extra={"action": "relay", "reason": f"{type(exc).__name__}: {exc}"},
                        )
                    await self._drop_producer()
                    pause = compute_backoff(failures, base=0.2, cap=5.0)
                await self._prune()
                if pause:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wait_any(self._wakeup.wait(), stop.wait()), pause)
        finally:
            await self._drop_producer()
            await self._listener.close()

    async def _connect(self) -> None:
        """LISTEN, the topics (again now and then: a broker may come back without them), and
        the producer."""
        if not self._listener.alive:
            with contextlib.suppress(Exception):  # polling covers for it meanwhile
                await self._listener.start()
        if self._producer is None or time.monotonic() - self._checked > TOPIC_CHECK:
            await ensure_topics(self.config, check_partitions=self._producer is None)
            self._checked = time.monotonic()
        if self._producer is None:
            self._producer = await start_producer(self.config)
            logger.info("relay connected", extra={"action": "relay"})

    async def publish_once(self) -> bool:
        """Publish one batch, marked published once the broker acked all of it; True when
        there may be more. The rows stay locked (SKIP LOCKED: other relays pass them by) until
        then; a batch not acked within the request timeout is tried again, and a message that
        did reach the broker then arrives twice, which the claim skips."""
        records = self.store.outbox_rows
        async with self.store.engine.begin() as conn:
            rows = await records.take(conn, BATCH)
            if not rows:
                return False
            sends: list[asyncio.Future[Any]] = []
            try:
                async with asyncio.timeout(self.config.request_timeout):
                    for row in rows:
                        payload = json.dumps(row.payload).encode()
                        sends.append(await self._producer.send(row.topic, payload))
                    await asyncio.gather(*sends)
            finally:
                for sent in sends:  # none left with an exception nobody retrieved
                    sent.add_done_callback(_retrieve)
            await records.mark(conn, [row.id for row in rows])
        return len(rows) == BATCH

    async def _prune(self) -> None:
        if time.monotonic() - self._pruned < PRUNE_EVERY:
            return
        self._pruned = time.monotonic()
        try:
            await self.store.outbox_rows.prune(older_than=KEEP_PUBLISHED)
        except Exception as exc:
            logger.warning(
                "outbox pruning failed", extra={"action": "prune", "reason": type(exc).__name__}
            )

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await stop_client(producer)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
