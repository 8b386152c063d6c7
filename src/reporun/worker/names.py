"""The name server of network mode `open`: how such a job resolves names.

The job's /etc/resolv.conf names 127.0.0.1, where a relay in its network namespace
(worker/netjail.py) passes each query through a Unix socket to this server, one per job. It
answers A queries with what this host resolves (getaddrinfo, in threads of its own), leaving
out every address the job may not reach: a name that has only such addresses is answered as no
such name, so a name of the company's own network tells nothing of it. IPv6 (AAAA) and other
types are answered with no record. The job never sends a packet to the host's resolver
(slirp4netns' DNS is off), which may sit on the host's loopback; the names it asks for are
resolved as the host resolves them. Each name refused so is a line in the job's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import secrets
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Network
from pathlib import Path

from reporun.worker.egress import SAID_MAX
from reporun.worker.jobsocket import JobSocket
from reporun.worker.workdir import prepare_work_dir

QUERY_MAX = 512
ANSWER_MAX = 512  # a UDP answer's size: addresses past it are left out
RESOLVE_TIMEOUT = 10.0
QUERIES_MAX = 64  # connections at once, per job
LOOKUPS_MAX = 4  # lookups at once, per job (a slow one holds a thread until the resolver ends)
LABEL = re.compile(rb"[A-Za-z0-9_-]{1,63}")
A, IN = 1, 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 1, 2, 3, 4


class BadQuery(Exception):
    pass


def parse_query(query: bytes) -> tuple[int, int, str, int, bytes]:
    """A query's id, flags, name, type and its question as sent; BadQuery for anything but
    one plain question."""
    if len(query) < 17:
        raise BadQuery("short")
    ident, flags, questions = struct.unpack(">HHH", query[:6])
    if questions != 1:
        raise BadQuery("not one question")
    at, labels = 12, []
    while True:
        if at >= len(query):
            raise BadQuery("name runs past the end")
        size = query[at]
        if size == 0:
            break
        label = query[at + 1 : at + 1 + size]
        if size > 63 or len(label) != size or not LABEL.fullmatch(label):  # no compression either
            raise BadQuery("bad label")
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
    """A response to `question`: `code`, with an A record for each of `addresses` that fits
    in ANSWER_MAX bytes; the query's opcode and RD kept, RA set."""
    given = addresses[: max(0, (ANSWER_MAX - 12 - len(question)) // 16)]
    records = b"".join(
        b"\xc0\x0c" + struct.pack(">HHIH", A, IN, 60, 4) + socket.inet_aton(address)
        for address in given
    )
    head = struct.pack(">HHHHHH", ident, 0x8080 | (flags & 0x7900) | code, 1, len(given), 0, 0)
    return head + question + records


class NameServer(JobSocket):
    """One job's name server, on the Unix socket `path` (reachable by the job's uid)."""

    limit = QUERIES_MAX

    def __init__(
        self,
        refused: Sequence[IPv4Network],
        path: Path,
        say: Callable[[bytes], Awaitable[None]],
    ) -> None:
        super().__init__(path)
        self.refused = refused
        self.say = say  # writes a line into the job's log
        self._said: set[str] = set()
        self._lookups = ThreadPoolExecutor(LOOKUPS_MAX, thread_name_prefix="reporun-names")

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        # A lookup still running ends with the resolver's own timeout, in its thread.
        self._lookups.shutdown(wait=False, cancel_futures=True)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(RESOLVE_TIMEOUT + 5):
            size = struct.unpack(">H", await reader.readexactly(2))[0]
            response = await self.respond(await reader.readexactly(size))
            # An empty answer: none to give (the relay sends nothing back).
            given = response or b""
            writer.write(struct.pack(">H", len(given)) + given)
            await writer.drain()

    async def respond(self, query: bytes) -> bytes | None:
        """The answer to one query (None: none to give, to a response or to no header)."""
        if len(query) < 12 or len(query) > QUERY_MAX or query[2] & 0x80:
            return None
        ident, flags = struct.unpack(">HH", query[:4])
        if flags & 0x7800:  # an opcode other than QUERY
            return struct.pack(">HHHHHH", ident, 0x8080 | (flags & 0x7900) | NOTIMP, 0, 0, 0, 0)
        try:
            ident, flags, name, kind, question = parse_query(query)
        except BadQuery:
            return struct.pack(">HHHHHH", ident, 0x8080 | FORMERR, 0, 0, 0, 0)
        if kind != A:  # AAAA: the job has no IPv6; other types: none served
            return answer(ident, flags, question, NOERROR)
        loop = asyncio.get_running_loop()
        lookup = partial(socket.getaddrinfo, name, None, socket.AF_INET, socket.SOCK_STREAM)
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                found = await loop.run_in_executor(self._lookups, lookup)
        except socket.gaierror as exc:
            gone = exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5))
            return answer(ident, flags, question, NXDOMAIN if gone else SERVFAIL)
        except (OSError, TimeoutError, UnicodeError, RuntimeError):
            return answer(ident, flags, question, SERVFAIL)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        given = [a for a in addresses if not self._is_refused(a)]
        if addresses and not given:  # as if there were no such name: nothing of the inside
            await self._say(name)
            return answer(ident, flags, question, NXDOMAIN)
        return answer(ident, flags, question, NOERROR, given)

    def _is_refused(self, address: str) -> bool:
        ip = ipaddress.IPv4Address(address)
        return any(ip in network for network in self.refused)

    async def _say(self, name: str) -> None:
        if name in self._said or len(self._said) >= SAID_MAX:
            return
        self._said.add(name)  # letters, digits, - and _ only (parse_query)
        with contextlib.suppress(Exception):
            await self.say(
                f"reporun: name {name} refused: it resolves only to addresses this job may "
                "not reach\n".encode()
            )


@dataclass(frozen=True, slots=True)
class JobNames:
    """An `open` job's name server's socket, and what the job may not reach: one list for
    the name server and for the job's routes and rules (worker/netjail.py)."""

    socket: Path
    refused: tuple[IPv4Network, ...]


@contextlib.asynccontextmanager
async def names_for(
    mode: str,
    refused: Callable[[], Sequence[IPv4Network]],
    directory: Path,
    say: Callable[[bytes], Awaitable[None]],
) -> AsyncIterator[JobNames | None]:
    """A job's name server while it runs, for network mode `open`; None for the others.
    `refused`: what the job may not reach, read once, now."""
    if mode != "open":
        yield None
        return
    prepare_work_dir(directory)
    path = directory / f"{secrets.token_hex(8)}.dns"  # as long as a proxy's socket name
    networks = tuple(refused())
    async with NameServer(networks, path, say) as server:
        yield JobNames(server.path, networks)
