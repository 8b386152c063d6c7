"""The seed's observer signal in Kafka mode: the waits of the jobs that ended, read from the
`results` topic by the observer's own consumer group."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from typing import Any

from reporun.queue.broker import KafkaConfig, consumer, ensure_topics, stop_client
from reporun.retry import compute_backoff

logger = logging.getLogger("reporun.observer")

# Waits older than this are dropped whatever the window.
KEEP = 3600.0


def wait_of(value: bytes | None) -> float | None:
    """The wait (seconds) a results message carries; None when it has none (cancelled before
    it started) or is not one of ours."""
    try:
        waited = json.loads(value or b"").get("timeWaited")
    except (ValueError, AttributeError):
        return None
    if isinstance(waited, int | float) and not isinstance(waited, bool) and waited >= 0:
        return waited / 1000.0
    return None


class ResultsFeed:
    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self._waits: collections.deque[tuple[float, float]] = collections.deque()
        self.received = 0
        # While the consumer reads; when not, the observer takes its waits from the database.
        self.reading = False

    def recent(self, window: float) -> list[float]:
        """The waits of the results that arrived in the last `window` seconds."""
        since = time.monotonic() - window
        return [wait for at, wait in self._waits if at >= since]

    def add(self, wait: float, at: float | None = None) -> None:
        at = time.monotonic() if at is None else at
        self._waits.append((at, wait))
        while self._waits and self._waits[0][0] < at - KEEP:
            self._waits.popleft()

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            reader: Any = None
            try:
                # Only results from now on: a wait from before the observer started says
                # nothing about the queue now.
                reader = consumer(
                    self.config,
                    self.config.results_topic,
                    self.config.observer_group,
                    auto_offset_reset="latest",
                )
                await ensure_topics(self.config)
                await reader.start()
                reader.subscribe([self.config.results_topic])
                failures = 0
                self.reading = True
                assigned = False
                while not stop.is_set():
                    batches = await reader.getmany(timeout_ms=500)
                    if not assigned and reader.assignment():
                        assigned = True
                        logger.info(
                            "reading results",
                            extra={"action": "results", "group": self.config.observer_group},
                        )
                    for records in batches.values():
                        for record in records:
                            self.received += 1
                            if (wait := wait_of(record.value)) is not None:
                                self.add(wait)
                    if batches:
                        with contextlib.suppress(Exception):
                            await reader.commit()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.reading = False
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    logger.warning(
                        "cannot read results; waits come from the database meanwhile",
                        extra={"action": "results", "reason": f"{type(exc).__name__}: {exc}"},
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        stop.wait(), compute_backoff(failures, base=0.5, cap=10.0)
                    )
            finally:
                self.reading = False
                if reader is not None:
                    await stop_client(reader)
