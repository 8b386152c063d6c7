"""Whether everything a job started is gone, told by the init of its PID namespace.

Bubblewrap names the sandbox's first process on its status descriptor as soon as it has made
it; that process is the init of the job's PID namespace, and every process of the job lives in
that namespace. When an init exits, the kernel kills every process of its namespace and waits
for them before the init's exit completes: once a descriptor of the init (a pidfd) says it has
exited, nothing of the job is left, and the worker need not sweep the job's uid. Bubblewrap
itself may end a moment before its init does (it reports the command's exit first), so the
watch waits a little for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

# How long the namespace's init may take to be gone after bubblewrap's own end.
INIT_GONE = 2.0


class InitWatch:
    """Reads bubblewrap's status descriptor while the job runs, for its init's pid."""

    def __init__(self, status_fd: int) -> None:
        self.status_fd = status_fd
        self.status = bytearray()  # what it read, for the caller's checks after the run
        self.pidfd: int | None = None
        self.gone = False  # the init had already been reaped when it was named
        self.loop = asyncio.get_running_loop()
        os.set_blocking(status_fd, False)
        self.loop.add_reader(status_fd, self._read)
        self.reading = True

    def _read(self) -> None:
        try:
            chunk = os.read(self.status_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        self.status += chunk
        if not chunk or b"\n" in self.status:
            self._stop_reading()
            if chunk:
                self._open(bytes(self.status).split(b"\n", 1)[0])

    def _open(self, line: bytes) -> None:
        try:
            pid = json.loads(line).get("child-pid")
        except (ValueError, AttributeError):
            return
        if not isinstance(pid, int):
            return
        try:
            self.pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.gone = True  # exited and reaped: its namespace went with it
        except OSError:
            pass

    def _stop_reading(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.status_fd)

    async def all_gone(self) -> bool:
        """After bubblewrap's end: whether the job's namespace is gone with everything in it
        (waiting up to INIT_GONE); False when that cannot be told."""
        self._stop_reading()
        if self.gone or self.pidfd is None:
            return self.gone
        exited: asyncio.Future[None] = self.loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        self.loop.add_reader(self.pidfd, readable)
        try:
            async with asyncio.timeout(INIT_GONE):
                await exited
            return True
        except TimeoutError:
            return False
        finally:
            self.loop.remove_reader(self.pidfd)

    def close(self) -> None:
        self._stop_reading()
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = None
