"""A job's output on its way into the log store: batched, fenced to the run holding the job,
and never lost to a passing database error."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from reporun.jobs import Job, LogTail, Start
from reporun.retry import compute_backoff
from reporun.store import Store

logger = logging.getLogger("reporun.worker")

LOG_FLUSH_BYTES = 64 * 1024
LOG_FLUSH_SECONDS = 0.25
LOG_CLOSE_TIMEOUT = 10.0


class LogWriter:
    """Batches a job's output into log chunks in the store. A failed write keeps the data for
    the next flush (the output is capped, so the buffer is bounded): the job's pipe is always
    drained, whatever the database does.

    The run's start (`begin`) goes in with the next chunk written, or with the next flush
    (the worker's watch flushes every quarter second), or with the end record (`tail`): it
    costs no write of its own."""

    def __init__(self, store: Store, job: Job, worker_id: str) -> None:
        self.store = store
        self.job = job
        self.worker_id = worker_id
        self.seq = 0
        self.buffer = bytearray()
        self.truncated = False
        self.flushed_at = time.monotonic()
        self.start: Start | None = None  # not written yet
        self.ended = False  # its tail was taken: nothing more is written from here
        self._lock = asyncio.Lock()
        self._writing: asyncio.Future[bool] | None = None

    def begin(self, start: Start) -> None:
        self.start = start

    async def write(self, data: bytes) -> None:
        self.buffer += data
        if (
            len(self.buffer) >= LOG_FLUSH_BYTES
            or time.monotonic() - self.flushed_at > LOG_FLUSH_SECONDS
        ):
            await self.flush()

    async def flush(self, *, truncated: bool = False) -> bool:
        """Write what is buffered; False when the store refused (kept for the next try)."""
        self.truncated |= truncated
        async with self._lock:
            await self._settled()
            self.flushed_at = time.monotonic()
            if self.ended or not (self.buffer or truncated or self.start):
                return True
            # A caller's timeout or cancellation never cuts a write in two (committed, yet
            # still buffered, it would be written twice): the write goes on without it.
            self._writing = asyncio.ensure_future(self._write(bytes(self.buffer), self.start))
            return await asyncio.shield(self._writing)

    async def _write(self, data: bytes, start: Start | None) -> bool:
        try:
            await self.store.logs.append(
                self.job.id,
                self.seq,
                data,
                truncated=self.truncated,
                worker=self.worker_id,
                attempt=self.job.attempts,
                fields=start.values() if start else None,
            )
        except Exception:
            logger.warning(
                "log write failed; kept for the next flush",
                exc_info=True,
                extra={"action": "log", "job_id": str(self.job.id), "worker": self.worker_id},
            )
            return False
        del self.buffer[: len(data)]
        self.seq += 1
        if self.start is start:
            self.start = None
        return True

    async def _settled(self) -> None:
        """After the write a cancelled flush left going."""
        if self._writing is not None:
            await asyncio.gather(asyncio.shield(self._writing), return_exceptions=True)
            self._writing = None

    async def tail(self, *, truncated: bool) -> tuple[LogTail | None, Start | None]:
        """What is not written yet, for the end record to carry; nothing more is written here
        after it."""
        async with self._lock:
            await self._settled()
            self.ended = True
            self.truncated |= truncated
            tail = None
            if self.buffer or self.truncated:
                tail = LogTail(self.seq, bytes(self.buffer), self.truncated)
            return tail, self.start

    async def close(self, *, truncated: bool) -> None:
        for attempt in range(20):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LOG_CLOSE_TIMEOUT):
                    if await self.flush(truncated=truncated):
                        return
            await asyncio.sleep(compute_backoff(attempt, cap=2.0))
        logger.error(
            "log write failed for good; the end of the log is lost",
            extra={
                "action": "log",
                "job_id": str(self.job.id),
                "worker": self.worker_id,
                "dropped_bytes": len(self.buffer),
            },
        )
