"""reporun.cli.http, the CLI's HTTP client, against real sockets: small servers on loopback that
answer as HTTP servers do (Content-Length, chunked, until the end; kept alive or not), with
TLS, and through a forward proxy. The client against reporun itself is in the acceptance
tests (every CLI command goes through it)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from reporun.cli import http
from reporun.errors import ConfigError
from tests.integration.small_servers import listening, respond, serving

JSON = b'{"items": [], "next_cursor": null}'


async def test_a_json_request_and_its_answer() -> None:
    answer = respond("200 OK", JSON, f"Content-Length: {len(JSON)}", "Content-Type: x")
    async with (
        serving(answer) as server,
        http.Client(server.url + "/", headers={"Authorization": "Bearer t"}) as client,
    ):
        response = await client.request(
            "POST", "/v1/jobs", params={"limit": 2, "status": "a b"}, json={"repo": "x"}
        )
        assert response.status_code == 200 and response.reason_phrase == "OK"
        assert response.json() == {"items": [], "next_cursor": None}
    head, body = server.requests[0]
    assert head.startswith("POST /v1/jobs?limit=2&status=a+b HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in head
    assert "Authorization: Bearer t\r\n" in head and "Content-Type: application/json" in head
    assert json.loads(body) == {"repo": "x"}


async def test_one_connection_serves_many_requests() -> None:
    answer = respond("200 OK", JSON, f"Content-Length: {len(JSON)}")
    async with serving(answer) as server, http.Client(server.url) as client:
        for _ in range(5):
            assert (await client.request("GET", "/v1/jobs")).json()["items"] == []
    assert server.connections == 1 and len(server.requests) == 5


async def test_a_connection_the_server_closed_meanwhile_is_replaced() -> None:
    # The server closes after each answer without saying so (as after its keep-alive timeout).
    answer = respond("200 OK", JSON, f"Content-Length: {len(JSON)}")
    async with serving(answer, keep_open=False) as server, http.Client(server.url) as client:
        for _ in range(3):
            assert (await client.request("GET", "/x")).status_code == 200
            await asyncio.sleep(0.05)
    assert server.connections == 3 and len(server.requests) == 3


async def test_a_chunked_body_streams_as_it_comes() -> None:
    first_sent = asyncio.Event()
    go_on = asyncio.Event()

    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"6\r\nhello \r\n")
        await writer.drain()
        first_sent.set()
        await go_on.wait()
        writer.write(b"5;ext=1\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\n")

    async with serving(answer) as server, http.Client(server.url) as client:
        async with client.stream("GET", "/log", timeout=None) as response:
            chunks = response.aiter_bytes()
            assert await anext(chunks) == b"hello "  # before the rest was even written
            go_on.set()
            assert [chunk async for chunk in chunks] == [b"world"]
        # The whole body was read: the connection is kept for the next request.
        again = await client.request("GET", "/log")
        assert again.text == "hello world"
    assert server.connections == 1


async def test_a_body_until_the_connection_closes_and_an_empty_one() -> None:
    until_end = serving(respond("200 OK", b"all of it"), keep_open=False)
    async with until_end as server, http.Client(server.url) as client:
        assert (await client.request("GET", "/")).content == b"all of it"
    async with serving(respond("204 No Content", b"")) as server:
        async with http.Client(server.url) as client:  # the server outlives it
            assert (await client.request("POST", "/cancel")).content == b""
            assert (await client.request("POST", "/cancel")).status_code == 204
        assert "Content-Length: 0" in server.requests[0][0]
        assert server.connections == 1


async def test_a_body_left_unread_closes_the_connection() -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nmore\r\n")

    async with serving(answer) as server, http.Client(server.url) as client:
        for _ in range(2):
            async with client.stream("GET", "/log", timeout=None) as response:
                assert await anext(response.aiter_bytes()) == b"more"
    assert server.connections == 2


async def test_failures_are_one_line_in_the_users_words() -> None:
    async with serving(respond("200 OK", b"")) as server:
        port = server.port
    async with http.Client(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(http.TransportError, match=r"^connection refused$"):
            await client.request("GET", "/")

    async def silent(head: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async with serving(silent) as server, http.Client(server.url, timeout=0.2) as client:
        with pytest.raises(http.TransportError, match=r"^no answer within 0\.2 s$"):
            await client.request("GET", "/")

    async def cut(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        writer.close()

    async with serving(cut, keep_open=False) as server, http.Client(server.url) as client:
        with pytest.raises(http.TransportError, match=r"^the server closed .* mid-answer$"):
            await client.request("GET", "/")


@pytest.mark.parametrize(
    ("url", "headers", "message"),
    [
        ("http://[::1", {}, "the server URL is not a URL"),
        ("ftp://example.com", {}, "must be an http:// or https:// URL"),
        ("http://127.0.0.1:99999", {}, "the server URL is not a URL"),
        ("http://127.0.0.1", {"Authorization": "Bearer tökén"}, "cannot carry"),
        ("http://127.0.0.1", {"Authorization": "a\r\nX-Evil: 1"}, "cannot carry"),
    ],
)
def test_bad_urls_and_headers_are_refused_before_any_request(
    url: str, headers: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        http.Client(url, headers=headers)


# TLS --------------------------------------------------------------------------------------------
@dataclass
class Certificates:
    ca_file: Path
    server: ssl.SSLContext


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA and a certificate it signed for `localhost` and 127.0.0.1."""
    root = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("reporun test CA"))
        .issuer_name(name("reporun test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName("reporun.test"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = root / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = root / "server.pem"
    chain.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(chain)
    return Certificates(ca_file, server)


async def test_https_with_a_trusted_certificate(
    certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = respond("200 OK", JSON, f"Content-Length: {len(JSON)}")
    async with serving(answer, tls=certificates.server) as server:
        url = f"https://localhost:{server.port}"
        async with http.Client(url) as client:
            with pytest.raises(http.TransportError, match="TLS certificate not trusted"):
                await client.request("GET", "/v1/jobs")
        monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
        async with http.Client(url) as client:
            for _ in range(2):
                assert (await client.request("GET", "/v1/jobs")).json()["items"] == []
        assert server.requests[-1][0].startswith("GET /v1/jobs HTTP/1.1")


# Proxies ----------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def forward_proxy(target_port: int) -> AsyncIterator[list[str]]:
    """An HTTP proxy on loopback that sends every request (absolute-form, or a CONNECT tunnel)
    to the target port on loopback, whatever host it names; the request lines it saw."""
    seen: list[str] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        first = head.split(b"\r\n", 1)[0].decode()
        seen.append(first + " | " + head.decode().split("\r\n", 1)[1].replace("\r\n", " | "))
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        if first.startswith("CONNECT "):
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            method, url, version = first.split(" ")
            path = "/" + url.split("://", 1)[1].split("/", 1)[1]
            up_writer.write(f"{method} {path} {version}\r\n".encode() + head.split(b"\r\n", 1)[1])
        with contextlib.suppress(asyncio.CancelledError):  # see `serving`
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async with listening(handle) as port:
        seen.append(f"port {port}")
        yield seen


async def test_requests_go_through_the_proxy_the_environment_names(
    certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = respond("200 OK", JSON, f"Content-Length: {len(JSON)}")
    async with serving(answer, keep_open=False) as server, forward_proxy(server.port) as seen:
        proxy = f"http://ann:p%40ss@127.0.0.1:{seen.pop(0).split()[1]}"
        env = {"HTTP_PROXY": proxy, "NO_PROXY": "internal.example.com"}
        async with http.Client("http://reporun.test:8000", environ=env) as client:
            assert (await client.request("GET", "/v1/jobs")).json()["items"] == []
        assert seen[0].startswith("GET http://reporun.test:8000/v1/jobs HTTP/1.1 |")
        assert "Proxy-Authorization: Basic YW5uOnBAc3M=" in seen[0]  # ann:p@ss
        # Loopback and NO_PROXY's hosts go direct (nothing would answer there: refused).
        for url in ("http://127.0.0.1:1", "http://api.internal.example.com:1"):
            assert http.Client(url, environ=env).proxy is None

    async with (
        serving(answer, tls=certificates.server) as server,
        forward_proxy(server.port) as seen,
    ):
        monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
        env = {"https_proxy": f"127.0.0.1:{seen.pop(0).split()[1]}"}
        async with http.Client("https://reporun.test", environ=env) as client:
            assert (await client.request("GET", "/v1/jobs")).json()["items"] == []
        assert seen[0].startswith("CONNECT reporun.test:443 HTTP/1.1 |")
        assert server.requests[0][0].startswith("GET /v1/jobs HTTP/1.1\r\nHost: reporun.test\r\n")


def test_only_http_proxies() -> None:
    with pytest.raises(ConfigError, match="only http:// proxies"):
        http.Client("https://example.com", environ={"HTTPS_PROXY": "socks5://127.0.0.1:1080"})
