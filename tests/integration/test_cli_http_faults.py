"""reporun.cli.http when the server misbehaves, against real sockets: a kept-alive connection
that fails is closed, a request that may have been carried out is not sent twice, a body cut
short says so, and interim (1xx) answers are skipped."""

from __future__ import annotations

import asyncio

import pytest

from reporun.cli import http
from tests.integration.small_servers import Answer, respond, serving, silent

JSON = b'{"items": []}'
OK = respond("200 OK", JSON, f"Content-Length: {len(JSON)}")


def then(first: Answer, later: Answer) -> Answer:
    """`first` for the first request the server reads, `later` for every one after it."""
    asked = 0

    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        nonlocal asked
        asked += 1
        await (first if asked == 1 else later)(head, writer)

    return answer


async def garbage(head: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SPDY/3 what\r\n\r\n")


async def hang_up(head: bytes, writer: asyncio.StreamWriter) -> None:
    """Read the request, then close without a word (as a server that crashed on it)."""
    writer.close()


@pytest.mark.parametrize("fault", ["timeout", "not http", "cancelled"])
async def test_a_reused_connection_that_fails_is_closed(fault: str) -> None:
    later = garbage if fault == "not http" else silent
    async with serving(then(OK, later)) as server, http.Client(server.url, timeout=0.3) as client:
        assert (await client.request("GET", "/first")).json() == {"items": []}
        request = asyncio.create_task(client.request("GET", "/second"))
        if fault == "cancelled":
            while len(server.requests) < 2:
                await asyncio.sleep(0.01)
            request.cancel()
        with pytest.raises(asyncio.CancelledError if fault == "cancelled" else http.TransportError):
            await request
        # The client closed its end: the server sees the stream end (before the client's
        # own close, which would close only a connection it kept).
        await asyncio.wait_for(server.hangup.wait(), 5)
        assert server.connections == 1 and len(server.requests) == 2


async def test_a_request_the_server_may_have_read_is_retried_only_if_idempotent() -> None:
    # The server answers the first request, then reads the second and hangs up.
    async with serving(then(OK, hang_up)) as server, http.Client(server.url) as client:
        await client.request("POST", "/v1/jobs", json={"repo": "a"})
        with pytest.raises(http.TransportError):
            await client.request("POST", "/v1/jobs", json={"repo": "b"})
    assert [body for _, body in server.requests] == [b'{"repo": "a"}', b'{"repo": "b"}']

    async with serving(then(OK, then(hang_up, OK))) as server, http.Client(server.url) as client:
        await client.request("GET", "/v1/jobs")
        assert (await client.request("GET", "/v1/jobs")).json() == {"items": []}
    assert len(server.requests) == 3 and server.connections == 2


async def test_a_connection_closed_before_the_request_is_replaced_for_any_method() -> None:
    # Closed after each answer, as at the end of a keep-alive: nothing of the next request
    # reached it, so even a POST goes on a new connection, once.
    async with serving(OK, keep_open=False) as server, http.Client(server.url) as client:
        for _ in range(3):
            assert (await client.request("POST", "/v1/jobs", json={})).status_code == 200
            await asyncio.sleep(0.05)
    assert server.connections == 3 and len(server.requests) == 3


@pytest.mark.parametrize(
    "cut",
    [
        b"5\r\nhello\r\n",  # before the next chunk's size
        b"5\r\nhello\r\n6\r\nwor",  # inside a chunk
        b"5\r\nhello\r\n6",  # inside a chunk's size line
    ],
)
async def test_a_chunked_body_cut_short_says_so(cut: bytes) -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + cut)
        writer.close()

    got = []
    async with serving(answer) as server, http.Client(server.url) as client:
        with pytest.raises(
            http.TransportError, match=r"^the server closed the connection mid-answer$"
        ):
            async with client.stream("GET", "/log", timeout=None) as response:
                async for chunk in response.aiter_bytes():
                    got.append(chunk)
    assert got == [b"hello"]


async def test_a_malformed_chunk_size_is_named() -> None:
    answer = respond("200 OK", b"zz\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding: chunked")
    async with serving(answer) as server, http.Client(server.url) as client:
        with pytest.raises(http.TransportError, match=r"^the answer's chunked body is malformed"):
            await client.request("GET", "/log")


async def test_interim_answers_are_skipped() -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        await OK(head, writer)

    async with serving(answer) as server, http.Client(server.url) as client:
        for _ in range(2):  # the second on the same connection, reading its own answer
            response = await client.request("POST", "/v1/jobs", json={})
            assert response.status_code == 200 and response.json() == {"items": []}
            assert "link" not in response.headers
    assert server.connections == 1
