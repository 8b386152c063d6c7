"""Scalers start workers and retire them. `LocalScaler`: `reporun worker` child processes.

Scale-in is a retirement, never a kill: the worker is told (SIGUSR1) to take no new job, to
finish the one it has however long it runs, and to exit. Shutting the pool down is a drain
(SIGTERM): each worker finishes its job up to the drain grace, then gives it back to the queue.
`stop_now` cuts the drain short (a second SIGTERM: the worker stops its job and gives it back);
a worker that still has not exited a moment later is killed with its whole process tree.
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
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from reporun.observer.proctree import kill_tree, wait_gone
from reporun.retry import compute_backoff

if TYPE_CHECKING:
    from reporun.store import Store

logger = logging.getLogger("reporun.observer")

# A worker that exits this soon after it started, with an error, is failing to start: the next
# start waits a capped, growing while.
QUICK_EXIT = 10.0
# A drain outlasting the workers' own grace by this much ends in kills.
DRAIN_MARGIN = 5.0
# After `stop_now`, how long a worker has to stop its job, give it back and exit.
STOP_NOW_GRACE = 5.0
# Settings of this process that its worker children must not share.
NOT_INHERITED = frozenset({"REPORUN_HEALTH_PORT", "REPORUN_HEALTH_HOST"})


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
    # An advisory scaler starts and retires nothing: the observer records its decisions (when
    # the count it asks for changes) for someone else to follow.
    advisory: bool

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
    """`reporun worker` processes on this host, children of this process, each in a session of
    its own (a terminal's Ctrl-C reaches this process alone, which stops them in order) and
    with a worker id given here (`worker_ids`), so their jobs can be found once they are gone."""

    name = "local"
    advisory = False

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
        self._ids: dict[int, str] = {}
        self._now = asyncio.Event()
        self._prefix = f"{self.host}-serve{os.getpid()}-{uuid.uuid4().hex[:4]}"
        # The workers `close` stopped (they were running when it began): gone once it returns.
        self.stopped_ids: list[str] = []

    @property
    def worker_ids(self) -> list[str]:
        """The worker ids of the workers running now (retiring ones too)."""
        running = [
            pid for pid, p in (*self._live.items(), *self._retiring.items()) if p.returncode is None
        ]
        return [self._ids[pid] for pid in running]

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
        # The probes' port is this process's own: a child bound to it would fail to start.
        inherited = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        for _ in range(count):
            worker_id = f"{self._prefix}-{len(self._ids) + 1}"
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "reporun",
                "worker",
                env={**inherited, **self.env, "REPORUN_WORKER_ID": worker_id},
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
            self._ids[process.pid] = worker_id
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

    def stop_now(self) -> None:
        """Cut the drain short: each worker stops its job at once and gives it back."""
        self._now.set()

    async def close(self) -> None:
        """Drain every worker (SIGTERM) up to the drain grace, or until `stop_now` (a second
        SIGTERM); kill the process tree of any worker still there after that, and wait."""
        processes = [*self._live.values(), *self._retiring.values()]
        self.stopped_ids = [self._ids[p.pid] for p in processes if p.returncode is None]
        _signal(processes, signal.SIGTERM)
        exited = asyncio.gather(*(p.wait() for p in processes))
        hurry = asyncio.create_task(self._now.wait())
        either: set[asyncio.Future[Any]] = {exited, hurry}
        try:
            await asyncio.wait(
                either,
                timeout=self.drain_grace + DRAIN_MARGIN,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if self._now.is_set() and not exited.done():
                _signal(processes, signal.SIGTERM)
                await asyncio.wait({exited}, timeout=STOP_NOW_GRACE)
            if not exited.done():
                await self._kill([p for p in processes if p.returncode is None])
            await exited
        finally:
            hurry.cancel()
            await asyncio.gather(hurry, return_exceptions=True)
        self._live.clear()
        self._retiring.clear()

    async def _kill(self, processes: Sequence[asyncio.subprocess.Process]) -> None:
        tree: set[int] = set()
        for process in processes:
            logger.warning(
                "a worker did not stop; killing it and its jobs",
                extra={"action": "kill", "pid": process.pid},
            )
            tree |= kill_tree(process.pid)
        await asyncio.gather(*(p.wait() for p in processes))
        if left := await wait_gone(tree, STOP_NOW_GRACE):
            logger.warning(
                "processes of a killed worker are still there",
                extra={"action": "kill", "pids": sorted(left)},
            )


def _signal(processes: Sequence[asyncio.subprocess.Process], sig: signal.Signals) -> None:
    for process in processes:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)


class AdvisoryScaler:
    """`REPORUN_SCALER=none`: the workers are whoever sends heartbeats (a Kubernetes
    Deployment's pods, a fixed pool), started and stopped by something else. The observer's
    decisions are recommendations (`reporun_workers_desired`) for that something to follow."""

    name = "none"
    advisory = True

    def __init__(self, store: Store, *, alive_within: float) -> None:
        self.store = store
        self.alive_within = alive_within

    async def prepare(self) -> None:
        return None

    async def members(self) -> list[Member]:
        rows = await self.store.list_workers(alive_within=self.alive_within)
        return [Member(row.id, row.host, row.pid) for row in rows if row.state != "draining"]

    async def add(self, count: int) -> int:
        return 0

    async def retire(self, handles: Sequence[str]) -> None:
        return None

    def retiring_count(self) -> int:
        return 0

    async def close(self) -> None:
        return None
