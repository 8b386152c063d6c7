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
from reporun.retry import compute_backoff
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


class Relay:
    def __init__(self, store: Store, config: KafkaConfig) -> None:
        self.store = store
        self.config = config
        self._wakeup = asyncio.Event()
        self._listener = Listener(store.engine, self._wakeup.set, OUTBOX_CHANNEL)
        self._producer: Any = None
        self.published = 0
        # Seconds from a row's creation to the broker's ack, for the latest batch (metrics).
        self.last_latency: float | None = None

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        checked = 0.0
        try:
            while not stop.is_set():
                try:
                    if not self._listener.alive:
                        with contextlib.suppress(Exception):
                            await self._listener.start()
                    if self._producer is None:
                        await ensure_topics(self.config)
                        checked = time.monotonic()
                        self._producer = await start_producer(self.config)
                        logger.info("relay connected", extra={"action": "relay"})
                    elif time.monotonic() - checked > TOPIC_CHECK:
                        await ensure_topics(self.config)
                        checked = time.monotonic()
                    more = await self.publish_once()
                    failures = 0
                    if more:
                        continue
                    pause = POLL
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    level = logging.WARNING if failures in (1, 10) or failures % 100 == 0 else 0
                    if level:
                        logger.warning(
                            "relay cannot publish; the rows wait in the outbox",
                            extra={"action": "relay", "reason": f"{type(exc).__name__}: {exc}"},
                        )
                    await self._drop_producer()
                    pause = compute_backoff(failures, base=0.2, cap=5.0)
                    checked = 0.0
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wait_any(self._wakeup.wait(), stop.wait()), pause)
        finally:
            await self._drop_producer()
            await self._listener.close()

    async def publish_once(self) -> bool:
        """Publish one batch; True when there may be more."""
        records = self.store.outbox_rows
        async with self.store.engine.begin() as conn:
            rows = await records.take(conn, BATCH)
            if not rows:
                return False
            async with asyncio.timeout(self.config.request_timeout * 2):
                sends = [
                    await self._producer.send(row.topic, json.dumps(row.payload).encode())
                    for row in rows
                ]
                await asyncio.gather(*sends)
            await records.mark(conn, [row.id for row in rows])
        now = time.time()
        self.last_latency = max(0.0, now - rows[-1].created_at.timestamp())
        self.published += len(rows)
        if self.published % 5000 < len(rows):
            await records.prune(older_than=KEEP_PUBLISHED)
        return len(rows) == BATCH

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await stop_client(producer)
