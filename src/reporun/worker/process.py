"""Run a command line, stream its merged output capped at the log limit (ended by a marker line
when cut), and kill its whole process group on timeout or stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from reporun.errors import SandboxError
from reporun.jobs import Limits

logger = logging.getLogger("reporun.worker")

OutputSink = Callable[[bytes], Awaitable[None]]
KILL_GRACE = 2.0


@dataclass(frozen=True, slots=True)
class RunResult:
    exit_code: int | None
    timed_out: bool
    cancelled: bool
    output_bytes: int
    truncated: bool
    seconds: float
    # Seconds from the sandbox's call to the job's command starting (None: not told).
    began: float | None = None


async def run_process(
    argv: list[str],
    *,
    limits: Limits,
    on_output: OutputSink,
    stop: asyncio.Event,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> RunResult:
    """Run, stream merged stdout/stderr capped at the log limit, kill the group on timeout/stop."""
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
            env=dict(env or {}),
            start_new_session=True,
            pass_fds=pass_fds,
        )
    except OSError as exc:
        raise SandboxError(f"cannot start the sandbox: {exc}") from exc
    assert process.stdout is not None
    counter = _Capped(limits.log, on_output)
    reader = asyncio.create_task(counter.drain(process.stdout))
    waiter = asyncio.create_task(process.wait())
    stopper = asyncio.create_task(stop.wait())
    timed_out = cancelled = False
    try:
        done, _ = await asyncio.wait(
            {waiter, stopper}, timeout=limits.timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            timed_out = stopper not in done
            cancelled = not timed_out
            _kill_group(process.pid)
            await waiter
    except asyncio.CancelledError:
        _kill_group(process.pid)
        await asyncio.shield(waiter)
        raise
    finally:
        stopper.cancel()
    # The pipe closes once every process holding it is gone; do not wait on stragglers forever.
    try:
        await asyncio.wait_for(asyncio.shield(reader), KILL_GRACE)
    except TimeoutError:
        _kill_group(process.pid)
        reader.cancel()
    return RunResult(
        exit_code=process.returncode,
        timed_out=timed_out,
        cancelled=cancelled,
        output_bytes=counter.seen,
        truncated=counter.truncated,
        seconds=time.monotonic() - started,
    )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def size_text(n: int) -> str:
    """Bytes as a person reads them: `512 bytes`, `4.0 KiB`, `1.0 MiB`."""
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def cut_marker(limit: int) -> bytes:
    """The line that ends a log cut at `limit`: the reader sees it was cut, where, and why."""
    return (
        f"[reporun: log cut at {size_text(limit)} (the job's log limit); "
        "the rest of its output was dropped, the job went on]\n"
    ).encode()


class _Capped:
    """Passes on output up to `limit` bytes, then the cut marker once (on a line of its own),
    then drops the rest but keeps the pipe drained."""

    def __init__(self, limit: int, sink: OutputSink) -> None:
        self.limit = limit
        self.sink = sink
        self.kept = 0
        self.seen = 0
        self.truncated = False
        self._line_open = False  # the last byte passed on was not a newline

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(256 * 1024):
            self.seen += len(chunk)
            if self.truncated:
                continue
            room = self.limit - self.kept
            if len(chunk) > room:
                self.truncated = True
                chunk = chunk[:room]
            if chunk:
                self.kept += len(chunk)
                self._line_open = not chunk.endswith(b"\n")
            if self.truncated:
                chunk += (b"\n" if self._line_open else b"") + cut_marker(self.limit)
            if chunk:
                await self._pass_on(chunk)

    async def _pass_on(self, chunk: bytes) -> None:
        try:
            await self.sink(chunk)
        except Exception:  # never stop draining: a full pipe would freeze the job
            logger.warning("log sink failed", exc_info=True, extra={"action": "log"})
