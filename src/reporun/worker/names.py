"""The name server of network mode `open`: how such a job resolves names.

The job's /etc/resolv.conf names 127.0.0.1, where a relay in its network namespace
(worker/netjail.py) passes each query through a Unix socket to this server, one per job. It
answers A queries with what this host resolves (getaddrinfo), leaving out every address the
job's routes refuse, so a name of the company's own network says nothing of it; IPv6 (AAAA) is
answered with no address, as the job has none; anything else is not served. The job never
speaks to the host's resolver (slirp4netns' DNS is off), which may sit on the host's loopback.
Each name left without an address for that reason is a line in the job's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import secrets
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from ipaddress import IPv4Network
from pathlib import Path

from reporun.worker.egress import SAID_MAX
from reporun.worker.workdir import prepare_work_dir

QUERY_MAX = 512
RESOLVE_TIMEOUT = 10.0
QUERIES_MAX = 64  # at once, per job
ANSWERS_MAX = 16  # addresses in an answer: it stays within 512 bytes
A, AAAA, IN = 1, 28, 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 1, 2, 3, 4


class BadQuery(Exception):
    pass


def parse_query(query: bytes) -> tuple[int, int, str, int, bytes]:
    """A query's id, flags, name, type and its question as sent; BadQuery for anything but
    one plain question."""
    if len(query) < 17:
        raise BadQuery("short")
    ident, flags, questions = struct.unpack(">HHH", query[:6])
    if flags & 0x8000 or questions != 1:
        raise BadQuery("not one question")
    at, labels = 12, []
    while True:
        if at >= len(query):
            raise BadQuery("name runs past the end")
        size = query[at]
        if size == 0:
            break
        if size > 63 or at + 1 + size > len(query):  # no compression in a question
            raise BadQuery("bad label")
        label = query[at + 1 : at + 1 + size]
        if not label.isascii():
            raise BadQuery("not ASCII")
        labels.append(label.decode().lower())
        at += 1 + size
    if len(query) < at + 5:
        raise BadQuery("no type")
    kind, klass = struct.unpack(">HH", query[at + 1 : at + 5])
    name = ".".join(labels)
    if not name or len(name) > 253 or klass != IN:
        raise BadQuery("bad name or class")
    return ident, flags, name, kind, query[12 : at + 5]


def answer(
    ident: int, flags: int, question: bytes, code: int, addresses: Sequence[str] = ()
) -> bytes:
    """A response to `question`: `code`, with an A record for each of `addresses`."""
    records = b"".join(
        b"\xc0\x0c" + struct.pack(">HHIH", A, IN, 60, 4) + socket.inet_aton(address)
        for address in addresses
    )
    head = struct.pack(">HHHHHH", ident, 0x8080 | (flags & 0x0100) | code, 1, len(addresses), 0, 0)
    return head + question + records


class NameServer:
    """One job's name server, on the Unix socket `path` (reachable by the job's uid)."""

    def __init__(
        self,
        refused: Sequence[IPv4Network],
        path: Path,
        say: Callable[[bytes], Awaitable[None]],
    ) -> None:
        self.refused = refused
        self.path = path
        self.say = say  # writes a line into the job's log
        self._server: asyncio.Server | None = None
        self._said: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> NameServer:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o777)  # the job's uid connects; the directory hides the name
        return self

    async def __aexit__(self, *exc: object) -> None:
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
        if len(self._tasks) >= QUERIES_MAX:
            writer.close()
            return
        self._tasks.add(task)
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT + 5):
                size = struct.unpack(">H", await reader.readexactly(2))[0]
                if size <= QUERY_MAX:
                    response = await self.respond(await reader.readexactly(size))
                    if response is not None:
                        writer.write(struct.pack(">H", len(response)) + response)
                        await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def respond(self, query: bytes) -> bytes | None:
        """The answer to one query (None: not even an id to answer to)."""
        try:
            ident, flags, name, kind, question = parse_query(query)
        except BadQuery:
            if len(query) < 12:
                return None
            return struct.pack(
                ">HHHHHH", struct.unpack(">H", query[:2])[0], 0x8080 | FORMERR, 0, 0, 0, 0
            )
        if kind == AAAA:
            return answer(ident, flags, question, NOERROR)  # the job has no IPv6
        if kind != A:
            return answer(ident, flags, question, NOTIMP)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                found = await loop.getaddrinfo(name, None, family=socket.AF_INET)
        except socket.gaierror as exc:
            gone = exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5))
            return answer(ident, flags, question, NXDOMAIN if gone else SERVFAIL)
        except (OSError, TimeoutError, UnicodeError):
            return answer(ident, flags, question, SERVFAIL)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        given = [a for a in addresses if not self._is_refused(a)][:ANSWERS_MAX]
        if addresses and not given:
            await self._say(name, addresses[0])
        return answer(ident, flags, question, NOERROR, given)

    def _is_refused(self, address: str) -> bool:
        ip = ipaddress.IPv4Address(address)
        return any(ip in network for network in self.refused)

    async def _say(self, name: str, address: str) -> None:
        if name in self._said or len(self._said) >= SAID_MAX:
            return
        self._said.add(name)
        with contextlib.suppress(Exception):
            await self.say(
                f"reporun: name {name} given no address: it resolves to {address}, which this "
                "job may not reach\n".encode()
            )


@contextlib.asynccontextmanager
async def names_for(
    mode: str,
    refused: Callable[[], Sequence[IPv4Network]],
    directory: Path,
    say: Callable[[bytes], Awaitable[None]],
) -> AsyncIterator[Path | None]:
    """A job's name server while it runs (its socket's path), for network mode `open`; None
    for the others. `refused`: what the job's routes refuse, as of now."""
    if mode != "open":
        yield None
        return
    prepare_work_dir(directory)
    path = directory / f"{secrets.token_hex(8)}.names.sock"
    async with NameServer(refused(), path, say) as server:
        yield server.path
