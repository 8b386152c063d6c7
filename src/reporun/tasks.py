"""Racing coroutines: what finishes first wins, and the losers are cancelled and awaited (so none
is left running, or its exception unretrieved)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def _cancel(tasks: Iterable[asyncio.Future[Any]]) -> None:
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def wait_any(*aws: Awaitable[object]) -> None:
    """Wait until the first of `aws` completes; cancel the rest and wait for them to end."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await _cancel([t for t in tasks if not t.done()])


async def unless(stop: asyncio.Event, work: Coroutine[object, object, T]) -> T | None:
    """The result of `work`, or None (and `work` cancelled and awaited) once `stop` is set."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await _cancel([task, stopper])  # the caller is gone: so is the work
        raise
    finally:
        await _cancel([t for t in (stopper,) if not t.done()])
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def communicate(process: asyncio.subprocess.Process, timeout: float) -> tuple[bytes, bytes]:
    """The process's output and errors; on a timeout (TimeoutError) or a cancel it is killed
    and reaped first, so no child outlives the wait."""
    try:
        return await asyncio.wait_for(process.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        process.kill()
        await process.wait()
        raise
