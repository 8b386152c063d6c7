"""Small HTTP servers on loopback for the CLI's HTTP client tests: each answers as a test
says (Content-Length, chunked, until the end; kept alive or not; or not at all) and records
what it was asked."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Server:
    """What it was asked (each request's head and body), how many connections it took, and
    how many of them the client closed (seen as the end of the stream between requests)."""

    port: int
    requests: list[tuple[str, bytes]] = field(default_factory=list)
    connections: int = 0
    hung_up: int = 0
    hangup: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def listening(handle: Handler, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """`handle` for each connection to a free loopback port (yielded); at the end the server
    closes and the handlers still running are cancelled and awaited."""
    handlers: set[asyncio.Task[None]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await handle(reader, writer)
        finally:
            handlers.discard(task)

    server = await asyncio.start_server(tracked, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


@contextlib.asynccontextmanager
async def serving(
    answer: Answer, *, keep_open: bool = True, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    """A server on a free loopback port; `answer` writes each response (or nothing). With
    `keep_open` it reads the next request on the same connection, else closes after one."""
    server = Server(0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    server.hung_up += 1
                    server.hangup.set()
                    break
                length = 0
                for line in head.decode().split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":")[1])
                body = await reader.readexactly(length) if length else b""
                server.requests.append((head.decode(), body))
                await answer(head, writer)
                if writer.is_closing():
                    break
                await writer.drain()
                if not keep_open:
                    break
        except asyncio.CancelledError:
            pass  # stopped at the end of the test: asyncio would log a cancelled handler
        finally:
            writer.close()

    async with listening(handle, tls=tls) as port:
        server.port = port
        yield server


def respond(status: str, body: bytes, *headers: str) -> Answer:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        lines = [f"HTTP/1.1 {status}", *headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    return answer


async def silent(head: bytes, writer: asyncio.StreamWriter) -> None:
    """No answer: the connection stays open, the server waits for the next request."""
