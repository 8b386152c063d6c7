"""Scalers start workers and retire them. `LocalScaler`: `reporun worker` child processes.

Scale-in is a retirement, never a kill: the worker is told (SIGUSR1) to take no new job, to
finish the one it has however long it runs, and to exit. Shutting the pool down is a drain
(SIGTERM): each worker finishes its job up to the drain grace, then gives it back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from reporun.retry import compute_backoff

logger = logging.getLogger("reporun.observer")

# A worker that exits this soon after it started, with an error, is failing to start: the next
# start waits a capped, growing while.
QUICK_EXIT = 10.0


@dataclass(frozen=True, slots=True)
class Member:
    """One worker of the pool as the scaler knows it: its `handle` (a pid, a container id) and
    the host name and pid its worker reports in its heartbeat (pid None: any)."""

    handle: str
    host: str
    pid: int | None = None

    def matches(self, host: str, pid: int) -> bool:
        return host == self.host and (self.pid is None or pid == self.pid)


class Scaler(Protocol):
    name: str

    async def prepare(self) -> None:
        """Check the scaler can work here; ConfigError with one line when it cannot."""

    async def members(self) -> list[Member]:
        """Workers started and not retiring."""

    async def add(self, count: int) -> int:
        """Start `count` more workers; returns how many it started."""

    async def retire(self, handles: Sequence[str]) -> None:
        """Tell these workers to finish their job and exit."""

    def retiring_count(self) -> int:
        """Workers told to retire that have not exited yet (they may still run a job)."""

    async def close(self) -> None:
        """Drain every worker and wait for them (up to the drain grace)."""


class LocalScaler:
    """`reporun worker` processes on this host, children of this process."""

    name = "local"

    def __init__(self, env: Mapping[str, str], *, drain_grace: float) -> None:
        self.env = dict(env)
        self.drain_grace = drain_grace
        self.host = socket.gethostname()
        self._live: dict[int, asyncio.subprocess.Process] = {}
        self._started: dict[int, float] = {}
        self._retiring: dict[int, asyncio.subprocess.Process] = {}
        self._failures = 0
        self._hold_until = 0.0
        self._reapers: set[asyncio.Task[None]] = set()

    @property
    def retiring(self) -> list[asyncio.subprocess.Process]:
        """Workers told to retire that have not exited yet."""
        return list(self._retiring.values())

    def retiring_count(self) -> int:
        return len(self._retiring)

    async def prepare(self) -> None:
        return None

    async def members(self) -> list[Member]:
        for pid, process in list(self._live.items()):
            if process.returncode is not None:
                self._forget(pid, process)
        return [Member(str(pid), self.host, pid) for pid in self._live]

    def _forget(self, pid: int, process: asyncio.subprocess.Process) -> None:
        del self._live[pid]
        lived = time.monotonic() - self._started.pop(pid, 0.0)
        if process.returncode != 0 and lived < QUICK_EXIT:
            self._failures += 1
            self._hold_until = time.monotonic() + compute_backoff(
                self._failures, base=1.0, cap=30.0
            )
        else:
            self._failures = 0
        logger.warning(
            "a worker process exited",
            extra={"action": "exited", "pid": pid, "code": process.returncode},
        )

    async def add(self, count: int) -> int:
        if time.monotonic() < self._hold_until:
            return 0
        for _ in range(count):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "reporun",
                "worker",
                env={**os.environ, **self.env},
                stdin=asyncio.subprocess.DEVNULL,
            )
            self._live[process.pid] = process
            self._started[process.pid] = time.monotonic()
            logger.info("worker process started", extra={"action": "spawn", "pid": process.pid})
        return count

    async def retire(self, handles: Sequence[str]) -> None:
        for handle in handles:
            process = self._live.pop(int(handle), None)
            if process is None:
                continue
            self._started.pop(process.pid, None)
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGUSR1)
            self._retiring[process.pid] = process
            logger.info("retiring a worker", extra={"action": "retire", "pid": process.pid})
            reaper = asyncio.create_task(self._reap(process))
            self._reapers.add(reaper)
            reaper.add_done_callback(self._reapers.discard)

    async def _reap(self, process: asyncio.subprocess.Process) -> None:
        await process.wait()
        self._retiring.pop(process.pid, None)
        logger.info(
            "worker retired",
            extra={"action": "retired", "pid": process.pid, "code": process.returncode},
        )

    async def close(self) -> None:
        processes = [*self._live.values(), *self._retiring.values()]
        for process in processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        waits = [asyncio.create_task(p.wait()) for p in processes]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self.drain_grace + 5)
            for process in processes:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            for task in pending:
                await task
        self._live.clear()
        self._retiring.clear()
