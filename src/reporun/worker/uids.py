"""Unprivileged uids for jobs when the worker is root: one per running job on the host."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
from collections.abc import Iterator
from pathlib import Path

from reporun.errors import SandboxError

# The range jobs run in when the worker is root: far above any uid a system hands out.
DEFAULT_UID_BASE = 1_100_000
DEFAULT_UID_COUNT = 65_536


class UidPool:
    """Unprivileged uids for jobs, one per running job on this host (locks in /run)."""

    def __init__(
        self,
        base: int = DEFAULT_UID_BASE,
        count: int = DEFAULT_UID_COUNT,
        lock_dir: Path = Path("/run/reporun-uids"),
    ) -> None:
        self.base = base
        self.count = count
        self.lock_dir = lock_dir

    @contextlib.contextmanager
    def take(self) -> Iterator[int]:
        self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for _ in range(1000):
            uid = self.base + random.randrange(self.count)
            path = self.lock_dir / str(uid)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # Its last holder may have removed the file between our open and our lock.
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    raise BlockingIOError
            except (BlockingIOError, FileNotFoundError):
                os.close(fd)
                continue
            try:
                yield uid
            finally:
                path.unlink(missing_ok=True)
                os.close(fd)
            return
        raise SandboxError("no free uid for the job")


async def sweep_uid(uid: int) -> None:
    """Kill every process left with the job's uid (`kill -1` as that uid reaches exactly them)."""
    process = await asyncio.create_subprocess_exec(
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--",
        "kill",
        "-9",
        "-1",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin"},
    )
    await process.wait()
