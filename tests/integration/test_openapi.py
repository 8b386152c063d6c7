"""The OpenAPI document says what the server answers: schemathesis, run as a new user runs it
(`st run` against the served /openapi.json, every check on), finds no failure."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from reporun.api.app import create_app
from reporun.api.auth import LocalAuth
from reporun.api.deps import Services
from reporun.config import Settings
from reporun.runtime import build_queue
from reporun.store import Store
from tests.conftest import free_port

# Checks that cannot apply to one operation are turned off (or narrowed) for it alone, each with
# the reason beside it. Everything else runs with schemathesis' defaults.
CONFIG = """
[auth.openapi.bearer]
bearer = "${REPORUN_TEST_TOKEN}"

# Whether a repository URL is taken depends on this server's URL policy (its schemes, allowed
# and trusted hosts) and on what the host resolves to, which no schema can state: a URL the
# schema admits may get a 400 naming `repo`. Any other answer to valid data still fails.
[[operations]]
include-name = ["POST /v1/jobs", "GET /add"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "429"]

# A body over REPORUN_MAX_BODY_BYTES is refused (413) before anything in it is read, so a value
# past a documented maximum may be refused for its size rather than its value.
[[operations]]
include-name = "POST /v1/jobs"
checks.negative_data_rejection.expected-statuses = [
  "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429",
]

# A cursor is opaque: only one this server gave out is valid, so a drawn one gets a 400.
[[operations]]
include-name = "GET /v1/jobs"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404"]
"""

SEED = 20240611
MAX_EXAMPLES = 20
REQUEST_TIMEOUT = 5.0


@dataclass
class Served:
    url: str
    auth: LocalAuth


@pytest.fixture
async def served(settings: Settings, store: Store) -> AsyncIterator[Served]:
    """The API on uvicorn on a free loopback port. Only 127.0.0.1 may be a repository host, so no
    drawn URL sends a DNS query off this machine."""
    settings = settings.model_copy(update={"allowed_hosts": ["127.0.0.1"]})
    auth = LocalAuth(settings.secret_key.get_secret_value())  # type: ignore[union-attr]
    app = create_app(Services(settings, store, build_queue(settings, store), auth))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    serving = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if serving.done() or time.monotonic() > deadline:
            pytest.fail(f"uvicorn did not start on 127.0.0.1:{port}")
        await asyncio.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", auth)
    finally:
        server.should_exit = True
        await serving


async def seed_jobs(served: Served) -> None:
    """A cancelled job each for an admin and a user, so lists and reads answer real jobs (none
    stays queued: with no worker, `logs?follow=true` on it would stream until the timeout)."""
    async with httpx.AsyncClient(base_url=served.url) as client:
        for name, role in (("root", "admin"), ("alice", "user")):
            headers = {"Authorization": f"Bearer {served.auth.mint(name, role)}"}
            body = {"repo": "https://127.0.0.1/octo/hello.git", "ref": "main", "env": {"A": "1"}}
            job = await client.post("/v1/jobs", json=body, headers=headers)
            assert job.status_code == 202, job.text
            cancel = await client.post(f"/v1/jobs/{job.json()['id']}/cancel", headers=headers)
            assert cancel.status_code == 202, cancel.text


def schemathesis_cli() -> Path:
    cli = Path(sys.executable).with_name("st")
    if not cli.exists():
        pytest.fail("schemathesis is required for this test: pip install -e '.[dev]'")
    return cli


async def schemathesis(served: Served, tmp_path: Path, token: str) -> tuple[int, str]:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    process = await asyncio.create_subprocess_exec(
        str(schemathesis_cli()),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{served.url}/openapi.json",
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--request-timeout",
        str(REQUEST_TIMEOUT),
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--continue-on-failure",
        cwd=tmp_path,
        env={**os.environ, "REPORUN_TEST_TOKEN": token, "NO_COLOR": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def test_schemathesis_finds_no_failure_as_an_admin(served: Served, tmp_path: Path) -> None:
    await seed_jobs(served)
    started = time.monotonic()
    code, report = await schemathesis(served, tmp_path, served.auth.mint("root", "admin"))
    took = time.monotonic() - started
    assert code == 0, f"schemathesis found failures ({took:.1f} s):\n{report}"
    print(report)
