"""A job's output on its way into the log store: batched, fenced to the run holding the job,
and never lost to a passing database error."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from reporun.jobs import Job
from reporun.retry import compute_backoff
from reporun.store import Store

logger = logging.getLogger("reporun.worker")

LOG_FLUSH_BYTES = 64 * 1024
LOG_FLUSH_SECONDS = 0.25
LOG_CLOSE_TIMEOUT = 10.0


class LogWriter:
    """Batches a job's output into log chunks in the store. A failed write keeps the data for
    the next flush (the output is capped, so the buffer is bounded): the job's pipe is always
    drained, whatever the database does."""

    def __init__(self, store: Store, job: Job, worker_id: str) -> None:
        self.store = store
        self.job = job
        self.worker_id = worker_id
        self.seq = 0
        self.buffer = bytearray()
        self.truncated = False
        self.flushed_at = time.monotonic()
        self._lock = asyncio.Lock()

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
            self.flushed_at = time.monotonic()
            if not self.buffer and not truncated:
                return True
            data = bytes(self.buffer)
            try:
                await self.store.logs.append(
                    self.job.id,
                    self.seq,
                    data,
                    truncated=self.truncated,
                    worker=self.worker_id,
                    attempt=self.job.attempts,
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
            return True

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
