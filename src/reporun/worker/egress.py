"""The egress proxy of network mode `registries`: a job's only way out.

Each such job gets its own proxy, a Unix socket in the worker's work dir that a forwarder inside
the job's network namespace (worker/netjail.py) relays 127.0.0.1:3128 to. It speaks what
package managers send to an HTTP proxy: `CONNECT host:port` (HTTPS) and absolute-form requests
(`GET http://host/...`). It allows only the operator's named hosts, resolves each name itself,
and refuses loopback, link-local (cloud metadata), multicast and reserved addresses, this
host's own addresses, and private ones unless the operator says that host is inside (a mirror
of the company's). It connects to the very address it checked. Every refusal is one line in
the job's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from reporun.jobs import DEFAULT_EGRESS_HOSTS
from reporun.worker.jobsocket import JobSocket
from reporun.worker.workdir import prepare_work_dir

logger = logging.getLogger("reporun.worker")

WEB_PORTS = (80, 443)
HEAD_MAX = 16 * 1024
# At most this many connections of one job at once, and this many lines of refusals in its log.
CONNECTIONS_MAX = 64
# A ClientHello longer than this (post-quantum key shares make them a few KiB) is refused.
HELLO_MAX = 32 * 1024
SAID_MAX = 20
HEAD_TIMEOUT = 30.0
CONNECT_TIMEOUT = 15.0
RESOLVE_TIMEOUT = 10.0
IDLE_TIMEOUT = 300.0  # nothing either way this long, and a connection is closed
CHUNK = 64 * 1024

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# A Unix socket's path has room for 107 bytes: a deep work dir gets one in /tmp instead.
SOCKET_DIR_MAX = 80


def egress_dir(work_dir: Path) -> Path:
    """Where a worker's proxies listen, beside its work dir (made, and checked, as one)."""
    beside = work_dir.with_name(f"{work_dir.name}-egress")
    if len(str(beside)) <= SOCKET_DIR_MAX:
        return beside
    return Path(tempfile.gettempdir()) / f"reporun-egress-{os.geteuid()}"


class Refused(Exception):
    """A request the proxy will not pass on; its message is the reason, for the job's log."""


def _local(address: Address) -> bool:
    """Whether `address` is one of this host's own (binding to it works)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
        return True


def _matches(host: str, pattern: str) -> bool:
    """`host` is `pattern`, or (for `*.example.org`) a name under it."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Which hosts a job may reach: names (`pypi.org`) or suffixes (`*.pythonhosted.org`), on
    ports 80 and 443, or on the one port an entry names (`mirror.corp:8080`); `private` names
    those allowed to resolve to private addresses."""

    hosts: tuple[str, ...] = DEFAULT_EGRESS_HOSTS
    private: frozenset[str] = frozenset()

    @classmethod
    def of(cls, hosts: Iterable[str], private: Iterable[str] = ()) -> EgressPolicy:
        return cls(
            tuple(h.strip().lower() for h in hosts if h.strip()),
            frozenset(h.strip().lower() for h in private if h.strip()),
        )

    def allows(self, host: str, port: int) -> bool:
        for entry in self.hosts:
            pattern, _, only = entry.partition(":")
            if only:
                if not only.isdigit() or int(only) != port:
                    continue
            elif port not in WEB_PORTS:
                continue
            if _matches(host, pattern):
                return True
        return False

    def check_address(self, host: str, address: Address) -> None:
        """Refused with the reason when `host`, resolved to `address`, may not be reached."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_loopback:
            raise Refused(f"{address} is a loopback address (the worker host's own services)")
        if address.is_link_local:
            raise Refused(f"{address} is a link-local address (where cloud metadata is served)")
        if address.is_multicast or address.is_unspecified or address.is_reserved:
            raise Refused(f"{address} is not an address a registry has")
        if _local(address):
            raise Refused(f"{address} is an address of the worker host")
        inside = any(_matches(host, p.partition(":")[0]) for p in self.private)
        if not address.is_global and not inside:
            raise Refused(f"{address} is a private address")


def _parse_target(target: str, default_port: int) -> tuple[str, int]:
    host, port = target, default_port
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif target.count(":") == 1:
        host, _, port_text = target.partition(":")
        port = int(port_text)
    if not host or not 0 < port < 65536:
        raise ValueError(target)
    return host.lower().rstrip("."), port


def _sni(hello: bytes) -> str | None:
    """The server name a TLS ClientHello (the handshake message, after its record headers)
    asks for; None when it names none or is not one."""
    try:
        if hello[0] != 1:  # ClientHello
            return None
        at = 4 + 2 + 32  # type and length, client version, random
        at += 1 + hello[at]  # session id
        at += 2 + int.from_bytes(hello[at : at + 2])  # cipher suites
        at += 1 + hello[at]  # compression methods
        end = at + 2 + int.from_bytes(hello[at : at + 2])
        at += 2
        while at + 4 <= end:
            kind, size = int.from_bytes(hello[at : at + 2]), int.from_bytes(hello[at + 2 : at + 4])
            body = hello[at + 4 : at + 4 + size]
            if kind == 0 and len(body) >= 5 and body[2] == 0:  # server_name, host_name
                length = int.from_bytes(body[3:5])
                return body[5 : 5 + length].decode("ascii").lower().rstrip(".")
            at += 4 + size
    except (IndexError, UnicodeDecodeError):
        return None
    return None


async def _client_hello(reader: asyncio.StreamReader) -> tuple[bytes, str | None]:
    """The TLS records that carry the client's ClientHello (to be passed on as they came),
    and the server name it asks for (None: not TLS, or no name)."""
    records, handshake = b"", b""
    while len(records) < HELLO_MAX:
        header = await reader.readexactly(5)
        if header[0] != 0x16:  # not a handshake record: not TLS
            return records + header, None
        body = await reader.readexactly(int.from_bytes(header[3:5]))
        records += header + body
        handshake += body
        if len(handshake) >= 4 and len(handshake) >= 4 + int.from_bytes(handshake[1:4]):
            return records, _sni(handshake)
    return records, None


def _shown(host: str) -> str:
    """A host as the job's log shows it: printable, and short."""
    return host if host.isprintable() and len(host) <= 100 else repr(host[:100])


async def _resolve(host: str, port: int) -> list[Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError):
        raise Refused(f"{host} could not be resolved") from None
    addresses: list[Address] = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class _Activity:
    """When bytes last went either way through a connection."""

    def __init__(self) -> None:
        self.last = time.monotonic()


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, activity: _Activity
) -> None:
    try:
        while data := await reader.read(CHUNK):
            activity.last = time.monotonic()
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()


async def _relay(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    *,
    one_exchange: bool,
) -> None:
    """Bytes both ways until both ends are done (or, for `one_exchange`, the upstream's
    answer is), or nothing has gone either way for IDLE_TIMEOUT (a long download that sends
    nothing back is not idle)."""
    activity = _Activity()
    up = asyncio.ensure_future(_pipe(client[0], upstream[1], activity))
    down = asyncio.ensure_future(_pipe(upstream[0], client[1], activity))
    try:
        while not (down.done() and (one_exchange or up.done())):
            left = IDLE_TIMEOUT - (time.monotonic() - activity.last)
            if left <= 0:
                break
            pending = {task for task in (up, down) if not task.done()}
            await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if down.done() and one_exchange:
                break
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)


class EgressProxy(JobSocket):
    """One job's proxy, on the Unix socket `path` (made reachable by the job's uid)."""

    limit = CONNECTIONS_MAX

    def __init__(
        self, policy: EgressPolicy, path: Path, say: Callable[[bytes], Awaitable[None]]
    ) -> None:
        super().__init__(path)
        self.policy = policy
        self.say = say  # writes a line into the job's log
        self._reached: set[str] = set()
        self._refusals = 0

    async def refused_at_limit(self) -> None:
        await self._refused(f"more than {CONNECTIONS_MAX} connections at once")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(HEAD_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > HEAD_MAX:
            return await self._answer(writer, 431, "the request's head is too large")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, _, rest = request_line.partition(" ")
        target, _, version = rest.partition(" ")
        try:
            if method == "CONNECT":
                host, port = _parse_target(target, 443)
                path = ""
            elif target.startswith("http://") and method in ("GET", "HEAD"):
                authority, slash, tail = target.removeprefix("http://").partition("/")
                host, port = _parse_target(authority, 80)
                path = (slash + tail) or "/"
            else:  # a registry is read from: nothing is sent to it but GET and HEAD
                return await self._answer(writer, 400, "only CONNECT, GET and HEAD pass")
        except ValueError:
            return await self._answer(writer, 400, f"{target[:200]!r} names no host")
        try:
            upstream_reader, upstream_writer = await self._open(host, port)
        except Refused as exc:
            await self._refused(f"to {_shown(host)}:{port} refused: {exc}")
            return await self._answer(writer, 403, str(exc))
        try:
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
                # The tunnel carries TLS to the host that was checked: shared CDN addresses
                # route by the name the handshake asks for, so that name must be `host`.
                async with asyncio.timeout(HEAD_TIMEOUT):
                    hello, asked = await _client_hello(reader)
                if asked != host:
                    why = (
                        f"the TLS handshake asks for {_shown(asked)}"
                        if asked
                        else "a tunnel carries TLS naming its host, and this one does not"
                    )
                    await self._refused(f"to {_shown(host)}:{port} refused: {why}")
                    return
                upstream_writer.write(hello)
            else:  # the request again, in origin form, for one exchange
                # The host asked for is the host reached: the job's own Host header goes (a
                # CDN would route by it), as do the proxy's and the connection's.
                kept = [
                    line
                    for line in header_lines
                    if line
                    and not line.lower().startswith(
                        ("host:", "proxy-", "connection:", "keep-alive:", "transfer-encoding:")
                    )
                ]
                authority = host if port == 80 else f"{host}:{port}"
                upstream_writer.write(
                    "\r\n".join(
                        [
                            f"{method} {path} {version or 'HTTP/1.1'}",
                            f"Host: {authority}",
                            *kept,
                            "Connection: close",
                        ]
                    ).encode("latin-1")
                    + b"\r\n\r\n"
                )
            await _relay(
                (reader, writer),
                (upstream_reader, upstream_writer),
                one_exchange=method != "CONNECT",
            )
        finally:
            upstream_writer.close()

    async def _refused(self, what: str) -> None:
        """One line of the job's log per refusal, up to SAID_MAX of them."""
        self._refusals += 1
        if self._refusals <= SAID_MAX:
            await self._say(f"reporun: egress {what}\n".encode())
        elif self._refusals == SAID_MAX + 1:
            await self._say(b"reporun: egress: further refusals are not logged\n")

    async def _say(self, line: bytes) -> None:
        if not self._closed:  # a write to the log is never cut in half by a closing tunnel
            await asyncio.shield(self.say(line))

    async def _open(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not self.policy.allows(host, port):
            raise Refused(f"{_shown(host)}:{port} is not one of the registries this server allows")
        reason = ""
        for address in await _resolve(host, port):
            try:
                self.policy.check_address(host, address)
            except Refused as exc:
                reason = str(exc)
                continue
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    opened = await asyncio.open_connection(str(address), port)
            except (OSError, TimeoutError) as exc:
                reason = f"{address}:{port} could not be reached ({type(exc).__name__})"
                continue
            if host not in self._reached:
                self._reached.add(host)
                await self._say(f"reporun: egress to {_shown(host)}:{port} ({address})\n".encode())
            return opened
        raise Refused(reason or f"{host} has no address")

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
        phrase = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large"}
        body = f"reporun: {reason}\n".encode()
        writer.write(
            f"HTTP/1.1 {status} {phrase.get(status, 'Error')}\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()


@contextlib.asynccontextmanager
async def egress_for(
    mode: str, policy: EgressPolicy, directory: Path, say: Callable[[bytes], Awaitable[None]]
) -> AsyncIterator[Path | None]:
    """A job's egress proxy while it runs (its socket's path), for network mode `registries`;
    None for the others."""
    if mode != "registries":
        yield None
        return
    prepare_work_dir(directory)
    async with EgressProxy(policy, directory / f"{secrets.token_hex(8)}.sock", say) as proxy:
        yield proxy.path
