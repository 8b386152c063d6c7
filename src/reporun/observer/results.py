"""The seed's observer signal in Kafka mode: the waits of the jobs that ended, read from the
`results` topic by the observer's own consumer group.

A wait counts in the window by when its job ended (the message's `timeFinished`), not by when
the message arrived: results read late (a restarted observer catching up, a backlog flushed
after a broker outage) say nothing about the queue now. A message read twice counts once.
While the results cannot be read, `reading` is False and the observer takes its waits from the
database.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from reporun.queue.broker import KafkaConfig, consumer, ensure_topics, stop_client
from reporun.retry import compute_backoff, worth_logging

logger = logging.getLogger("reporun.observer")

# Waits of jobs that ended longer ago than this are dropped, whatever the window.
KEEP = 3600.0
# Messages remembered to count each once.
SEEN = 10_000
# How often the broker is asked whether it is still there (a poll does not tell).
CHECK_EVERY = 10.0
POLL_MS = 500


@dataclass(frozen=True, slots=True)
class Result:
    key: tuple[str, int]  # the job and the attempts it took: one end per job
    finished: float  # seconds since the epoch
    wait: float  # seconds


def result_of(value: bytes | None) -> Result | None:
    """The wait a results message carries; None when it has none (a job cancelled before it
    started) or is not one of ours."""
    try:
        message = json.loads(value or b"")
        waited, finished = message["timeWaited"], message["timeFinished"]
        key = (str(message["jobId"]), int(message.get("attempts") or 0))
    except (ValueError, KeyError, TypeError):
        return None
    numbers = [v for v in (waited, finished) if isinstance(v, int | float)]
    if len(numbers) < 2 or any(isinstance(v, bool) or v < 0 for v in (waited, finished)):
        return None
    return Result(key, finished / 1000.0, waited / 1000.0)


class ResultsFeed:
    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self._waits: collections.deque[tuple[float, float]] = collections.deque()
        self._seen: collections.deque[tuple[str, int]] = collections.deque()
        self._seen_keys: set[tuple[str, int]] = set()
        # Assigned its partitions, and the broker answered lately.
        self.reading = False

    def recent(self, window: float) -> list[float]:
        """The waits of the jobs that ended in the last `window` seconds."""
        since = time.time() - window
        return [wait for finished, wait in self._waits if finished >= since]

    def add(self, result: Result) -> None:
        if result.key in self._seen_keys:
            return
        self._seen.append(result.key)
        self._seen_keys.add(result.key)
        if len(self._seen) > SEEN:
            self._seen_keys.discard(self._seen.popleft())
        if result.finished < time.time() - KEEP:
            return
        self._waits.append((result.finished, result.wait))
        horizon = time.time() - KEEP
        while self._waits and self._waits[0][0] < horizon:
            self._waits.popleft()

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            reader: Any = None
            try:
                # A new group starts at the end; an old one goes on from its last commit, and
                # what ended long ago falls out of the window by its own time.
                reader = consumer(
                    self.config, self.config.observer_group, auto_offset_reset="latest"
                )
                await ensure_topics(self.config)
                await reader.start()
                reader.subscribe([self.config.results_topic])
                await self._read(reader, stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if worth_logging(failures):
                    logger.warning(
                        "cannot read results; waits come from the database meanwhile",
                        extra={"action": "results", "reason": f"{type(exc).__name__}: {exc}"},
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        stop.wait(), compute_backoff(failures, base=0.5, cap=10.0)
                    )
            else:
                failures = 0
            finally:
                self.reading = False
                if reader is not None:
                    await stop_client(reader)

    async def _read(self, reader: Any, stop: asyncio.Event) -> None:
        checked = time.monotonic()
        while not stop.is_set():
            async with asyncio.timeout(POLL_MS / 1000 + 5):
                batches = await reader.getmany(timeout_ms=POLL_MS)
            if not self.reading and reader.assignment():
                self.reading = True
                logger.info(
                    "reading results",
                    extra={"action": "results", "group": self.config.observer_group},
                )
            for records in batches.values():
                for record in records:
                    if (result := result_of(record.value)) is not None:
                        self.add(result)
            if batches:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reader.commit(), 2.0)
            if time.monotonic() - checked > CHECK_EVERY:
                # Raises while the broker is away.
                await ensure_topics(self.config, check_partitions=False)
                checked = time.monotonic()
