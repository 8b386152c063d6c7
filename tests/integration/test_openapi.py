"""The OpenAPI document says what the server answers: schemathesis, run as a new user runs it
(`st run` against the served /openapi.json, every check on), finds no failure."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST

from reporun.api.app import create_app
from reporun.api.auth import LocalAuth
from reporun.api.problems import PROBLEM
from reporun.api.server import build_services
from reporun.config import Settings
from reporun.jobs import JobStatus, Start
from reporun.queue import Outcome, QueueBackend
from reporun.store import Store
from tests.harness.ports import free_port

# Among the longest files: started first, so the run does not end waiting on it.
pytestmark = pytest.mark.slow

# Checks that cannot apply to one operation as they stand are narrowed for it alone (each list is
# schemathesis' default plus one status), with the reason beside it. Everything else runs as
# schemathesis runs by default.
EXCEPTIONS = """
# Whether a repository URL is taken depends on this server's URL policy (its schemes, allowed
# and trusted hosts) and on what the host resolves to, which no schema can state: a URL the
# schema admits may get a 400 naming `repo`. Any other answer to valid data still fails.
[[operations]]
include-name = ["POST /v1/jobs", "GET /add"]
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx",
]

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
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx",
]
"""

# The warnings a clean run may give, and for which operations; any other (credentials never
# used, a pattern schemathesis cannot generate from, ...) would make its verdict hollow.
EXPECTED_WARNINGS = {
    # The URL policy refuses most drawn repository URLs (see EXCEPTIONS).
    "validation_mismatch": {"POST /v1/jobs", "GET /add"},
    # A drawn id is rarely a job's: how often a run reuses a real one varies.
    "missing_test_data": {
        "GET /status",
        "GET /v1/jobs/{job_id}",
        "GET /v1/jobs/{job_id}/logs",
        "POST /v1/jobs/{job_id}/cancel",
    },
}
ADMIN_CALLS = {"GET /v1/workers", "GET /v1/scaling", "GET /metrics"}

SEED = 20240611
REQUEST_TIMEOUT = 5.0
WORKER = "stand-in"


@dataclass
class Served:
    url: str
    auth: LocalAuth

    async def token(self, name: str, role: str) -> str:
        return (await self.auth.issue(name, role)).token


async def stand_in_worker(store: Store, queue: QueueBackend) -> None:
    """Ends every job at once, failed, with a line of log, and no sandbox: no job stays queued
    (with none running, `logs?follow=true` on a queued job would stream until the timeout), and
    the answers for ended jobs (a log, an exit code, 409 on cancel) and workers are exercised."""
    beat = 0.0
    while True:
        if time.monotonic() - beat > 1:
            await store.worker_heartbeat(
                WORKER, host="localhost", pid=os.getpid(), state="idle", current_job=None
            )
            beat = time.monotonic()
        job = await queue.claim(WORKER)
        if job is None:
            await asyncio.sleep(0.05)
            continue
        await queue.started(job, WORKER, Start("0" * 40, "true"))
        await store.logs.append(job.id, 0, b"stand-in worker: nothing ran\n")
        await queue.finish(job, WORKER, Outcome(JobStatus.FAILED, 1, "stand-in worker"))


@pytest.fixture
async def served(settings: Settings, store: Store) -> AsyncIterator[Served]:
    """The API on uvicorn on a free loopback port, with jobs of two users, a worker and a scaling
    decision to show. Only 127.0.0.1 may be a repository host, so no drawn URL sends a DNS query
    off this machine."""
    settings = settings.model_copy(update={"allowed_hosts": ["127.0.0.1"]})
    auth = LocalAuth(settings.secret_key.get_secret_value(), store.tokens)  # type: ignore[union-attr]
    services = build_services(settings, store, auth)
    queue = services.queue
    app = create_app(services)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    serving = asyncio.create_task(server.serve())
    worker = asyncio.create_task(stand_in_worker(store, queue))
    deadline = time.monotonic() + 10
    while not server.started:
        if serving.done() or time.monotonic() > deadline:
            pytest.fail(f"uvicorn did not start on 127.0.0.1:{port}")
        await asyncio.sleep(0.02)
    served = Served(f"http://127.0.0.1:{port}", auth)
    try:
        await seed(served, store)
        yield served
    finally:
        worker.cancel()
        server.should_exit = True
        await asyncio.gather(serving, worker, return_exceptions=True)


async def seed(served: Served, store: Store) -> None:
    await store.scaling.record(
        scaler="local", direction="out", actual=0, desired=1, reason="seed", inputs={"p95": 3.0}
    )
    async with httpx.AsyncClient(base_url=served.url) as client:
        for name, role in (("root", "admin"), ("alice", "user"), ("bob", "user")):
            headers = {"Authorization": f"Bearer {await served.token(name, role)}"}
            body = {"repo": "https://127.0.0.1/octo/hello.git", "ref": "main", "env": {"A": "1"}}
            job = await client.post("/v1/jobs", json=body, headers=headers)
            assert job.status_code == 202, job.text


def schemathesis_cli() -> Path:
    cli = Path(sys.executable).with_name("st")
    if not cli.exists():
        pytest.fail("schemathesis is required for this test: pip install -e '.[dev]'")
    return cli


async def schemathesis(
    served: Served, tmp_path: Path, auth: str, *options: str
) -> tuple[dict[str, Any], str]:
    """`st run` against the served document; its JSON report and what it printed."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(auth + EXCEPTIONS)
    report = tmp_path / "report.json"
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
        "--request-timeout",
        str(REQUEST_TIMEOUT),
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--continue-on-failure",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        *options,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    printed = output.decode(errors="replace")
    if process.returncode != 0 or not report.exists():
        pytest.fail(f"schemathesis found failures (exit {process.returncode}):\n{printed}")
    return json.loads(report.read_text()), printed


async def documented_operations(served: Served) -> int:
    async with httpx.AsyncClient(base_url=served.url) as client:
        document = (await client.get("/openapi.json")).json()
    return sum(len(methods) for methods in document["paths"].values())


def assert_clean(
    report: dict[str, Any],
    printed: str,
    operations: int,
    warnings: dict[str, set[str]] = EXPECTED_WARNINGS,
) -> None:
    assert report["complete"] and not report["failures"] and not report["errors"], printed
    assert report["operations"]["tested"] == operations, printed
    unexpected = {
        kind: sorted(set(labels) - warnings.get(kind, set()))
        for kind, labels in report["warnings"].items()
        if set(labels) - warnings.get(kind, set())
    }
    assert not unexpected, f"unexpected warnings {unexpected}:\n{printed}"


async def test_schemathesis_finds_no_failure_as_an_admin(served: Served, tmp_path: Path) -> None:
    auth = f'[auth.openapi.bearer]\nbearer = "{await served.token("root", "admin")}"\n'
    report, printed = await schemathesis(served, tmp_path, auth, "--max-examples", "20")
    assert_clean(report, printed, await documented_operations(served))


async def test_schemathesis_finds_no_failure_as_users(served: Served, tmp_path: Path) -> None:
    """Two users that must not see each other's jobs: the 403 of every admin call, each user's
    own view, and (object_level_authorization) neither reading the other's job."""
    users = tmp_path / "users.json"
    entries = [
        {"name": name, "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {token}"}]}
        for name, token in [(n, await served.token(n, "user")) for n in ("alice", "bob")]
    ]
    users.write_text(json.dumps({"auth": entries}))
    auth = f'[auth.wfc]\npath = "{users}"\npeers = ["alice", "bob"]\n'
    report, printed = await schemathesis(
        served, tmp_path, auth, "--max-examples", "10", "--phases", "fuzzing,stateful"
    )
    # Neither user may make the admin calls: every answer to them is a 403.
    warnings = {**EXPECTED_WARNINGS, "missing_auth": ADMIN_CALLS}
    assert_clean(report, printed, await documented_operations(served), warnings)


async def test_the_document_names_problems_and_the_real_media_types(
    settings: Settings, store: Store
) -> None:
    """What a generated client relies on and a run may never meet: every error is problem+json,
    FastAPI's own 422 shape is gone, and /metrics served without a token says so."""
    for public in (False, True):
        configured = settings.model_copy(update={"metrics_public": public})
        key = configured.secret_key.get_secret_value()  # type: ignore[union-attr]
        auth = LocalAuth(key, store.tokens)
        app = create_app(build_services(configured, store, auth))
        document = app.openapi()
        assert "HTTPValidationError" not in document["components"]["schemas"]
        for path, methods in document["paths"].items():
            for method, operation in methods.items():
                for status, answer in operation["responses"].items():
                    if int(status) >= 400:
                        assert list(answer["content"]) == [PROBLEM], (method, path, status)
                if "security" in operation:
                    assert {"401", "403", "503"} <= set(operation["responses"]), (method, path)
        metrics = document["paths"]["/metrics"]["get"]
        assert list(metrics["responses"]["200"]["content"]) == [CONTENT_TYPE_LATEST]
        assert ("security" in metrics) is not public
        assert ("401" in metrics["responses"]) is not public


async def test_docs_come_from_the_package_and_declare_bearer_auth(
    settings: Settings, store: Store
) -> None:
    """/docs names only its own assets (the browser test renders them with no network), and
    every call but the health ones says it takes a bearer token, for "Authorize"."""
    auth = LocalAuth(settings.secret_key.get_secret_value(), store.tokens)  # type: ignore[union-attr]
    app = create_app(build_services(settings, store, auth))
    document = app.openapi()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    health = {"/healthz", "/readyz", "/healthcheck"}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            assert ("security" in operation) is (path not in health), (method, path)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://reporun.test") as client:
        page = await client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assets = [
            "/docs/assets/swagger-ui-bundle.js",
            "/docs/assets/swagger-ui.css",
            "/docs/assets/favicon-32x32.png",
        ]
        for asset in assets:
            assert f'"{asset}"' in page.text or f"'{asset}'" in page.text, asset
            served = await client.get(asset)
            assert served.status_code == 200 and len(served.content) > 500, asset
        assert "http://" not in page.text and "https://" not in page.text, page.text
        assert (await client.get("/docs/assets/LICENSE")).status_code == 200
        assert (await client.get("/redoc")).status_code == 404  # it would load from a CDN
