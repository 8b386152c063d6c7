"""A server on a Unix socket that one job's uid reaches from inside its sandbox (its egress
proxy, its name server): made reachable on entry, gone on exit with every connection's task,
at most `limit` connections at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Self


class JobSocket:
    limit = 64  # connections at once

    def __init__(self, path: Path) -> None:
        self.path = path
        self._server: asyncio.Server | None = None
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o777)  # the job's uid connects; the directory hides the name
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closed = True  # a connection whose handler starts late does nothing more
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closed:
            writer.close()
            return
        if len(self._tasks) >= self.limit:
            writer.close()
            await self.refused_at_limit()
            return
        self._tasks.add(task)
        try:
            await self.handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection (closed afterwards)."""
        raise NotImplementedError

    async def refused_at_limit(self) -> None:
        """A connection over the limit was closed unserved."""
