"""Scalers start and drain workers. `LocalScaler`: `reporun worker` child processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping

logger = logging.getLogger("reporun.observer")

RESTART_DELAY = 1.0


class LocalScaler:
    """Keeps `target` worker processes alive on this host; scale-in drains (SIGTERM), never
    kills a running job; a worker that dies is started again."""

    def __init__(self, env: Mapping[str, str], *, drain_grace: float) -> None:
        self.env = dict(env)
        self.drain_grace = drain_grace
        self.target = 0
        self.processes: list[asyncio.subprocess.Process] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def current(self) -> int:
        return sum(1 for p in self.processes if p.returncode is None)

    async def start(self, count: int) -> None:
        await self.scale(count)
        self._supervisor = asyncio.create_task(self._supervise())

    async def scale(self, count: int) -> None:
        self.target = count
        alive = [p for p in self.processes if p.returncode is None]
        while len(alive) < count:
            alive.append(await self._spawn())
        for process in alive[count:]:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        self.processes = alive

    async def _spawn(self) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "reporun",
            "worker",
            env={**os.environ, **self.env},
            stdin=asyncio.subprocess.DEVNULL,
        )
        logger.info("worker process started", extra={"action": "spawn", "pid": process.pid})
        return process

    async def _supervise(self) -> None:
        while not self._stopping:
            await asyncio.sleep(RESTART_DELAY)
            alive = [p for p in self.processes if p.returncode is None]
            if len(alive) < self.target and not self._stopping:
                logger.warning(
                    "a worker process exited; starting another",
                    extra={"action": "respawn", "alive": len(alive), "target": self.target},
                )
                self.processes = alive
                await self.scale(self.target)

    async def stop(self) -> None:
        """Drain every worker: each finishes its job (up to the grace period) and exits."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        for process in self.processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        waits = [asyncio.create_task(p.wait()) for p in self.processes]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self.drain_grace + 5)
            for process in self.processes:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            for task in pending:
                await task
