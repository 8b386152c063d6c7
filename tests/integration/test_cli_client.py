"""reporun.cli.client (the API's calls on the CLI's HTTP client) against servers that are not
reporun, or that stall: small real servers on loopback, a plain `python -m http.server`, and
the CLI run as a user runs it against it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from reporun.cli.client import ApiClient
from reporun.errors import ClientError, ConfigError
from tests.harness.ports import LOOPBACK, free_port
from tests.harness.processes import Processes
from tests.harness.server import cli_env, reporun
from tests.integration.small_servers import respond, serving, silent

JOB_ID = "0b5a5b4e-27c1-4f7e-9b0e-6f7b8d1f3c2a"
NOT_REPORUN = r"^http://127\.0\.0\.1:\d+ did not answer as a reporun server \("


@pytest.mark.parametrize(
    ("body", "content_type", "shown"),
    [
        (b"<html>hello</html>", "text/html", "200 OK, text/html, not JSON"),
        (b"[1, 2]", "application/json", "200 OK, application/json, not a JSON object"),
        (b"", None, "200 OK, no Content-Type, not JSON"),
    ],
)
async def test_an_answer_that_is_not_reporuns_json_says_so(
    body: bytes, content_type: str | None, shown: str
) -> None:
    headers = [f"Content-Length: {len(body)}"] + (
        [f"Content-Type: {content_type}"] * bool(content_type)
    )
    answer = respond("200 OK", body, *headers)
    async with serving(answer) as server, ApiClient(server.url, "t") as client:
        with pytest.raises(ConfigError, match=NOT_REPORUN) as raised:
            await client.jobs(status=None, limit=20, cursor=None)
    assert raised.value.message.endswith(f"({shown})")


@pytest.mark.parametrize(
    ("moved_to", "shown"),
    [
        # http -> https, as a TLS front does: the new base URL is the location less the path.
        ("https://reporun.example", "https://reporun.example"),
        # A path below the host (a relative location).
        ("/reporun", "http://127.0.0.1:{port}/reporun"),
    ],
)
async def test_a_redirect_is_named_and_not_followed(moved_to: str, shown: str) -> None:
    async def moved(head: bytes, writer: asyncio.StreamWriter) -> None:
        target = head.split(b" ")[1].decode()  # the same path and query, elsewhere
        writer.write(
            f"HTTP/1.1 301 Moved Permanently\r\nLocation: {moved_to}{target}\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )

    async with serving(moved) as server, ApiClient(server.url, "secret") as client:
        with pytest.raises(ConfigError) as in_jobs:
            await client.jobs(status=None, limit=20, cursor=None)
        with pytest.raises(ConfigError) as in_logs:
            async for _ in client.follow(JOB_ID):
                pass
    wanted = f"{server.url} redirected to {shown.format(port=server.port)}; set REPORUN_URL to it"
    assert in_jobs.value.message == wanted
    assert in_logs.value.message == wanted
    assert len(server.requests) == 2  # neither followed (with the token) anywhere


async def test_a_redirect_elsewhere_is_not_offered_as_the_url() -> None:
    moved = respond(
        "302 Found", b"", "Location: https://sso.example/login?next=x", "Content-Length: 0"
    )
    async with serving(moved) as server, ApiClient(server.url, "t") as client:
        with pytest.raises(ConfigError, match=NOT_REPORUN) as raised:
            await client.job(JOB_ID)
    assert raised.value.message.endswith("(it redirected to https://sso.example/login?next=x)")


@pytest.mark.parametrize("follow", [False, True])
async def test_logs_time_out_when_the_server_never_answers(follow: bool) -> None:
    async with serving(silent) as server, ApiClient(server.url, "t", timeout=0.3) as client:
        with pytest.raises(ClientError, match=r"^cannot reach .*: no answer within 0\.3 s$"):
            async with asyncio.timeout(20):  # a hang fails the test instead of stalling it
                async for _ in client.follow(JOB_ID) if follow else client.logs(JOB_ID):
                    pass


async def test_only_a_followed_log_may_be_quiet_between_chunks() -> None:
    go_on = asyncio.Event()

    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello\n\r\n")
        await writer.drain()
        await go_on.wait()
        writer.write(b"5\r\nmore\n\r\n0\r\n\r\n")

    async with serving(answer) as server, ApiClient(server.url, "t", timeout=0.3) as client:
        with pytest.raises(ClientError, match=r": the answer stalled \(nothing for 0\.3 s\)$"):
            async with asyncio.timeout(20):  # a hang fails the test instead of stalling it
                async for _ in client.logs(JOB_ID):
                    pass
    go_on.clear()

    async def events(head: bytes, writer: asyncio.StreamWriter) -> None:
        def chunk(data: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(data), data)

        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(chunk(b'id: 6\nevent: log\ndata: "hello\\n"\n\n'))
        await writer.drain()
        await go_on.wait()
        writer.write(chunk(b': keep-alive\n\nid: 11\nevent: log\ndata: "more\\n"\n\n'))
        writer.write(chunk(b"event: end\ndata: {}\n\n") + b"0\r\n\r\n")

    async with serving(events) as server, ApiClient(server.url, "t", timeout=0.3) as client:
        got = []
        async for chunk in client.follow(JOB_ID):
            got.append(chunk)
            await asyncio.sleep(1)  # three times the timeout, before the rest is even sent
            go_on.set()
    assert got == [b"hello\n", b"more\n"]


def test_the_cli_against_a_plain_http_server(tmp_path: Path) -> None:
    """`python -m http.server` at REPORUN_URL: a file where /v1/jobs is, a directory where
    /v1/workers is (it redirects to the directory's URL with a slash)."""
    root = tmp_path / "site"
    (root / "v1" / "workers").mkdir(parents=True)
    (root / "v1" / "jobs").write_text("<html>not an API</html>\n")
    port = free_port()
    processes = Processes()
    try:
        served = processes.start(
            [sys.executable, "-m", "http.server", str(port), "--bind", LOOPBACK, "-d", str(root)],
            {},
            tmp_path / "http.log",
        )
        served.wait_http(f"http://{LOOPBACK}:{port}/")
        env = cli_env(tmp_path / "data", port, REPORUN_TOKEN="t")
        url = f"http://{LOOPBACK}:{port}"
        for args, message in (
            (("jobs",), f"{url} did not answer as a reporun server (200 OK, "),
            (("workers",), f"{url} did not answer as a reporun server (it redirected to "),
        ):
            done = reporun(*args, env=env)
            assert done.returncode == 2, (args, done.stdout, done.stderr)
            assert done.stdout == "" and done.stderr.startswith(f"reporun: {message}"), done.stderr
            assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    finally:
        processes.close()
