"""The CLI's HTTP client: HTTP/1.1 on asyncio streams, as much as the client commands need.

JSON requests and answers, a streamed body (a followed log), one kept-alive connection, https
with the system's certificates, and the proxy reporun.cli.proxy names. Why not httpx: importing
it and building its client cost a client command about 0.2 s, more than all the rest it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import os
import socket
import ssl
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any
from urllib.parse import SplitResult, urlencode

from reporun import __version__
from reporun.cli.proxy import basic_auth, parse_origin, proxy_for
from reporun.errors import ClientError, ConfigError

MAX_HEAD = 64 * 1024  # bytes of status line and headers
CHUNK = 64 * 1024


class TransportError(ClientError):
    """The server could not be reached, or broke the connection; `answered` once the answer's
    head had come (the failure was in its body)."""

    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


class _Default:
    """The client's own timeout."""


DEFAULT = _Default()


class _EarlyClose(ConnectionError):
    """The server closed the connection before answering."""


MID_ANSWER = "the server closed the connection mid-answer"
# A request the server may have acted on before the connection broke is sent again only if
# sending it twice does no harm.
IDEMPOTENT = frozenset({"GET", "HEAD"})


def _port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


class Response:
    """An answer: status and headers at once; the body read whole (`request`) or as it
    comes (`stream`: `aiter_bytes`, or `aread` for all of it)."""

    def __init__(
        self, status_code: int, reason_phrase: str, headers: dict[str, str], body: _Body
    ) -> None:
        self.status_code = status_code
        self.reason_phrase = reason_phrase
        self.headers = headers
        self._body = body
        self._content: bytes | None = None

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("the body has not been read (call aread)")
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    async def aread(self) -> bytes:
        if self._content is None:
            self._content = b"".join([chunk async for chunk in self._body.chunks()])
        return self._content

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        async for chunk in self._body.chunks():
            yield chunk


class _Body:
    """A response body on the connection: Content-Length, chunked, or until the end. Its
    place is kept between reads, so a reader may stop and another go on."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        headers: dict[str, str],
        timeout: float | None,
        *,
        empty: bool = False,
    ) -> None:
        self.reader = reader
        self.timeout = timeout
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        self.length = int(length) if length is not None and not self.chunked else None
        self.left = self.length
        self.empty = empty
        self.complete = empty or self.left == 0

    async def _read(self, call: Coroutine[Any, Any, bytes]) -> bytes:
        async with asyncio.timeout(self.timeout):
            return await call

    async def _next(self) -> bytes:
        """The next piece of the body; b"" at its end."""
        if self.complete:
            return b""
        if self.chunked:
            size = _chunk_size(await self._line())
            if size:
                try:
                    data = await self._read(self.reader.readexactly(size + 2))
                except asyncio.IncompleteReadError:
                    raise _EarlyClose(MID_ANSWER) from None
                return data[:-2]
            while (await self._line()).strip():
                pass  # trailers
        elif self.left is not None:
            data = await self._read(self.reader.read(min(self.left, CHUNK)))
            if not data:
                raise _EarlyClose(MID_ANSWER)
            self.left -= len(data)
            self.complete = self.left == 0
            return data
        elif data := await self._read(self.reader.read(CHUNK)):
            return data
        self.complete = True
        return b""

    async def _line(self) -> bytes:
        """A line of the chunked framing; a line without its end is the connection's end."""
        line = await self._read(self.reader.readline())
        if not line.endswith(b"\n"):
            raise _EarlyClose(MID_ANSWER)
        return line

    async def chunks(self) -> AsyncIterator[bytes]:
        while data := await self._next():
            yield data


def _chunk_size(line: bytes) -> int:
    text = line.split(b";")[0].strip()
    try:
        if text.isalnum():  # int() would take "+5", "0x5" and "5_0"
            return int(text, 16)
    except ValueError:
        pass
    raise ValueError(f"the answer's chunked body is malformed (a chunk size of {text[:20]!r})")


class Client:
    """Requests to `base_url` with `headers`; `timeout` seconds for the connection and for
    each read (None: no limit). Close it (`aclose`, or `async with`)."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = 30.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.base = parse_origin(base_url, "the server URL")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.proxy = proxy_for(self.base, os.environ if environ is None else environ)
        self.headers = {"User-Agent": f"reporun/{__version__}", "Accept": "*/*"}
        self.headers.update(headers or {})
        for name, value in self.headers.items():
            if not value.isascii() or not value.isprintable():
                raise ConfigError(f"the {name} header holds characters HTTP cannot carry")
        self._idle: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._context: ssl.SSLContext | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._idle is not None:
            _, writer = self._idle
            self._idle = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Response:
        """The answer, its body read."""
        async with self.stream(method, path, params=params, json=json) as response:
            await response.aread()
            return response

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        timeout: float | _Default | None = DEFAULT,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Response]:
        """The answer once its headers came; the body is read from it inside the block (a body
        left unread closes the connection). The connection and the answer's head within the
        client's timeout always; `timeout` for each read of the body (None: a followed log,
        which may be quiet for long), default the client's."""
        limit = self.timeout if isinstance(timeout, _Default) else timeout
        body = b"" if json is None else jsonlib.dumps(json).encode()
        head = self._head(method, path, params, body if json is not None else None, headers)
        try:
            reader, writer, response = await self._exchange(method, head + body, limit)
        except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            raise TransportError(_describe(exc, self.timeout)) from None
        try:
            yield response
        except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            writer.close()
            message = _describe(exc, limit)
            if isinstance(exc, TimeoutError) and limit:
                message = f"the answer stalled (nothing for {limit:g} s)"
            raise TransportError(message, answered=True) from None
        except BaseException:
            writer.close()
            raise
        if response._body.complete and _reusable(response) and self._idle is None:
            self._idle = (reader, writer)
        else:
            writer.close()

    def _head(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        body: bytes | None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        target = (self.base.path.rstrip("/") + path) or "/"
        if params:
            target += "?" + urlencode(params)
        if self.proxy is not None and self.base.scheme == "http":
            target = f"http://{self.base.netloc.rpartition('@')[2]}{target}"
        host = self.base.hostname or ""
        shown = f"[{host}]" if ":" in host else host
        if self.base.port is not None:
            shown += f":{self.base.port}"
        lines = [f"{method} {target} HTTP/1.1", f"Host: {shown}"]
        lines += [f"{name}: {value}" for name, value in {**self.headers, **(headers or {})}.items()]
        if self.proxy is not None and self.base.scheme == "http" and self.proxy.username:
            lines.append(f"Proxy-Authorization: {basic_auth(self.proxy)}")
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        elif method in ("POST", "PUT", "PATCH"):
            lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _exchange(
        self, method: str, request: bytes, body_timeout: float | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Response]:
        """Send and read the answer's head, on the idle connection if there is one. One the
        server closed before the request (the end of its keep-alive, seen before sending) is
        replaced for any method. One that breaks after the request went out is tried again on
        a new connection only for an idempotent method: the server may have read a POST and
        acted on it before the connection broke, and a submission must not run twice."""
        idle, self._idle = self._idle, None
        if idle is not None and not _stale(*idle):
            reader, writer = idle
            try:
                return reader, writer, await self._send(reader, writer, request, body_timeout)
            except BaseException as exc:
                writer.close()
                broke = isinstance(exc, ConnectionError | asyncio.IncompleteReadError)
                if not broke or method not in IDEMPOTENT:
                    raise
        elif idle is not None:
            idle[1].close()
        reader, writer = await self._connect()
        try:
            return reader, writer, await self._send(reader, writer, request, body_timeout)
        except BaseException:
            writer.close()
            raise

    async def _send(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: bytes,
        body_timeout: float | None,
    ) -> Response:
        writer.write(request)
        async with asyncio.timeout(self.timeout):
            await writer.drain()
            status, reason, headers = await _read_head(reader)
            # Interim answers (100 Continue, 103 Early Hints) come before the final one.
            while 100 <= status < 200 and status != 101:
                status, reason, headers = await _read_head(reader)
        # No body after 101, 204 and 304, nor after HEAD (which this client does not send).
        empty = status < 200 or status in (204, 304)
        body = _Body(reader, headers, body_timeout, empty=empty)
        return Response(status, reason, headers, body)

    def _tls(self) -> ssl.SSLContext:
        """The system's certificates (and SSL_CERT_FILE / SSL_CERT_DIR), loaded on first use."""
        if self._context is None:
            self._context = ssl.create_default_context()
        return self._context

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        target = self.proxy or self.base
        host = target.hostname or ""
        tls = self.base.scheme == "https"
        async with asyncio.timeout(self.timeout):
            if self.proxy is None:
                return await asyncio.open_connection(
                    host, _port(target), ssl=self._tls() if tls else None, limit=MAX_HEAD
                )
            reader, writer = await asyncio.open_connection(host, _port(target), limit=MAX_HEAD)
            if tls:
                try:
                    await self._tunnel(reader, writer)
                except BaseException:
                    writer.close()
                    raise
            return reader, writer

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """CONNECT through the proxy, then TLS with the server inside it."""
        assert self.proxy is not None
        host = self.base.hostname or ""
        where = f"[{host}]:{_port(self.base)}" if ":" in host else f"{host}:{_port(self.base)}"
        lines = [f"CONNECT {where} HTTP/1.1", f"Host: {where}"]
        if self.proxy.username:
            lines.append(f"Proxy-Authorization: {basic_auth(self.proxy)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        status, reason, _ = await _read_head(reader)
        if status != 200:
            raise ConnectionError(f"the proxy refused the tunnel: {status} {reason}")
        await writer.start_tls(self._tls(), server_hostname=host)


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise _EarlyClose("the server closed the connection without answering") from exc
    except asyncio.LimitOverrunError:
        raise ValueError("the answer's headers are too long") from None
    first, *lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = first.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ValueError(f"not an HTTP answer: {first[:80]!r}")
    headers: dict[str, str] = {"http-version": version}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(code), reason, headers


def _stale(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """An idle connection the server already closed (or reset)."""
    return reader.at_eof() or reader.exception() is not None or writer.is_closing()


def _reusable(response: Response) -> bool:
    keep = response.headers.get("connection", "").lower() != "close"
    body = response._body
    delimited = body.chunked or body.length is not None or body.empty
    return keep and delimited and response.headers["http-version"] == "HTTP/1.1"


def _describe(exc: BaseException, timeout: float | None) -> str:
    """One line for a transport failure, in the user's words rather than the socket's."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s" if timeout else "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, EOFError | asyncio.IncompleteReadError):
        return MID_ANSWER
    if isinstance(exc, ConnectionResetError):
        return "the connection closed before the answer was complete"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__
