"""Health: what `/readyz` checks, and the probe server of the parts that serve no API.

`readiness` asks each dependency (the database, the queue or its broker) with a deadline and
names what is down; the API's `/readyz` and the probe server answer from it alike.

`HealthServer` (`REPORUN_HEALTH_PORT`) serves a worker's or an observer's probes for a
container's healthcheck or Kubernetes: `GET /healthz` is 200 while the process's event loop
answers, `GET /readyz` 200 while its dependencies answer, 503 naming them otherwise. It speaks
just enough HTTP/1.1 for a probe: one request per connection, no body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence

from reporun.errors import BrokerError, ConfigError, ReporunError

logger = logging.getLogger("reporun.health")

READY_TIMEOUT = 2.0
REQUEST_TIMEOUT = 5.0
MAX_REQUEST = 8192
# Probes answered at once; more connections are closed unanswered. A flood of probes must not
# take the database connections the part's own work needs.
MAX_CONNECTIONS = 8
# One readiness check serves every probe that arrives within this long.
READY_CACHE = 1.0

Probe = tuple[str, Callable[[], Awaitable[None]]]


async def readiness(probes: Sequence[Probe], timeout: float = READY_TIMEOUT) -> dict[str, str]:
    """Each probe's state, all asked at once: `ok`, `degraded: ...` (a Kafka broker away: jobs
    wait in the outbox and still run) or `down: ...`."""

    async def check(probe: Callable[[], Awaitable[None]]) -> str:
        try:
            await asyncio.wait_for(probe(), timeout)
            return "ok"
        except BrokerError as exc:
            return f"degraded: {exc.message}; jobs wait in the outbox"
        except ReporunError as exc:  # names what is down, e.g. the broker's address
            return f"down: {exc.message}"
        except TimeoutError:
            return f"down: no answer within {timeout:g} s"
        except Exception as exc:
            return f"down: {type(exc).__name__}"

    states = await asyncio.gather(*(check(probe) for _, probe in probes))
    return {name: state for (name, _), state in zip(probes, states, strict=True)}


def down_of(checks: dict[str, str]) -> list[str]:
    return [name for name, state in checks.items() if state.startswith("down")]


class HealthServer:
    """The probe server of one part (`part`: worker, observer) on `host`:`port`."""

    def __init__(self, part: str, host: str, port: int, probes: Sequence[Probe]) -> None:
        self.part = part
        self.host = host
        self.port = port
        self.probes = list(probes)
        self._server: asyncio.Server | None = None
        self._active = 0
        self._checked: tuple[float, dict[str, str]] | None = None
        self._checking: asyncio.Task[dict[str, str]] | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:
            raise ConfigError(
                f"REPORUN_HEALTH_PORT: cannot listen on {self.host}:{self.port} "
                f"({exc.strerror or exc})"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info(
            f"health probes on {self.host}:{self.port} (/healthz, /readyz)",
            extra={"action": "health", "port": self.port},
        )

    async def close(self) -> None:
        if self._checking is not None:
            self._checking.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._active >= MAX_CONNECTIONS:
            writer.close()
            return
        self._active += 1
        try:
            await self._exchange(reader, writer)
        finally:
            self._active -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = b""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            status, body = await self._answer(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, body = 400, {"status": "bad request"}
        except ConnectionError:
            return
        payload = json.dumps(body).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
        reason[503] = "Service Unavailable"
        writer.write(
            f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nCache-Control: no-store\r\n"
            "Connection: close\r\n\r\n".encode()
            + (b"" if head.startswith(b"HEAD ") else payload)
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _answer(self, head: bytes) -> tuple[int, dict[str, object]]:
        line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(head) > MAX_REQUEST or len(line) != 3 or not line[2].startswith("HTTP/"):
            return 400, {"status": "bad request"}
        method, target = line[0], line[1].split("?", 1)[0]
        if target not in ("/healthz", "/readyz"):
            return 404, {"status": "not found", "paths": ["/healthz", "/readyz"]}
        if method not in ("GET", "HEAD"):
            return 405, {"status": "method not allowed"}
        if target == "/healthz":
            return 200, {"status": "ok", "part": self.part}
        checks = await self._readiness()
        down = down_of(checks)
        if down:
            return 503, {"status": f"not ready: {', '.join(down)}", "checks": checks}
        return 200, {"status": "ready", "checks": checks}

    async def _readiness(self) -> dict[str, str]:
        """One check for the probes that arrive together, its answer kept a moment."""
        now = asyncio.get_running_loop().time()
        if self._checked is not None and now - self._checked[0] < READY_CACHE:
            return self._checked[1]
        if self._checking is None:
            self._checking = asyncio.create_task(readiness(self.probes))
        task = self._checking
        try:
            checks = await asyncio.shield(task)
        finally:
            if task.done() and self._checking is task:
                self._checking = None
        self._checked = (asyncio.get_running_loop().time(), checks)
        return checks
