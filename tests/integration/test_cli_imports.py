"""A client command imports only what it needs: run against a real `reporun serve`, the
process of `reporun jobs` (and the other client commands) loads no server, database,
migration or settings code, nor pydantic or httpx (together most of a second of start-up).
What each process imported is read from `python -X importtime`, which lists every module."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.processes import Processes
from tests.harness.server import REPORUN, Server

# The brief's list, and the libraries that made the start slow.
FORBIDDEN = (
    "pydantic_settings",
    "sqlalchemy",
    "alembic",
    "fastapi",
    "reporun.config",
    "reporun.store",
    "pydantic",
    "httpx",
    "uvicorn",
    "rich",
    "jwt",
)
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| ( *)(\S+)$", re.MULTILINE)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    """`reporun serve --workers 0` (the jobs stay queued), with one job submitted."""
    processes = Processes()
    try:
        server = Server(processes, tmp_path / "data").serve(
            tmp_path / "serve.log", "--workers", "0"
        )
        client = server.blocking_client()
        try:
            job = client.submit("https://example.com/a/b.git")
        finally:
            client.close()
        yield server, job["id"]
    finally:
        processes.close()


def imported_by(server: Server, *args: str) -> list[str]:
    """The modules the command's process imported (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *REPORUN[1:], *args],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    modules = [match[1] for match in IMPORTED.findall(done.stderr)]
    assert "reporun.cli" in modules, done.stderr[-2000:]
    return modules


def leaked(modules: list[str]) -> list[str]:
    return sorted({m for m in modules for bad in FORBIDDEN if m == bad or m.startswith(bad + ".")})


def test_client_commands_import_no_server_database_or_settings_code(
    server: tuple[Server, str],
) -> None:
    served, job_id = server
    served.env["REPORUN_TOKEN"] = served.token
    for args in (
        ("--help",),
        ("--version",),
        ("jobs",),
        ("jobs", "--json", "--all"),
        ("status", job_id),
        ("status", job_id, "--json"),
        ("logs", job_id),
        ("workers",),
        ("scaling",),
        ("submit", "https://example.com/c/d.git"),
        ("cancel", job_id),
    ):
        modules = imported_by(served, *args)
        assert leaked(modules) == [], (args, leaked(modules))


def test_the_token_reporun_serve_stored_is_found_without_them_too(
    server: tuple[Server, str],
) -> None:
    served, _ = server
    served.env.pop("REPORUN_TOKEN", None)  # read from the data dir, as a user's CLI does
    assert leaked(imported_by(served, "jobs")) == []


def test_the_check_sees_a_leak(server: tuple[Server, str]) -> None:
    """A server command does import them: the way this test reads a process's modules works."""
    served, _ = server
    modules = imported_by(served, "db", "upgrade")
    assert {"reporun.config", "sqlalchemy", "pydantic_settings"} <= set(leaked(modules))
