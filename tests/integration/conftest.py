"""The app in-process (real SQLite), workers in-process (real git, real bubblewrap)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from reporun.api.app import create_app
from reporun.api.auth import LocalAuth
from reporun.api.server import build_services
from reporun.config import Settings
from reporun.store import Store
from reporun.wiring import build_queue
from reporun.worker.loop import Worker
from reporun.worker.main import worker_config
from reporun.worker.sandbox import Bubblewrap
from tests.conftest import require_tool


@dataclass
class Api:
    client: httpx.AsyncClient
    auth: LocalAuth

    def headers(self, name: str = "alice", role: str = "user") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.auth.mint(name, role)}"}

    async def submit(self, name: str = "alice", role: str = "user", **body: Any) -> dict[str, Any]:
        response = await self.client.post("/v1/jobs", json=body, headers=self.headers(name, role))
        assert response.status_code == 202, response.text
        return dict(response.json())

    async def job(self, job_id: str) -> dict[str, Any]:
        response = await self.client.get(
            f"/v1/jobs/{job_id}", headers=self.headers("root", "admin")
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def log(self, job_id: str) -> bytes:
        response = await self.client.get(
            f"/v1/jobs/{job_id}/logs", headers=self.headers("root", "admin")
        )
        assert response.status_code == 200, response.text
        return response.content

    async def wait(
        self, job_id: str, statuses: set[str] | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        """Poll until the job is in one of `statuses` (default: any end)."""
        statuses = statuses or {"succeeded", "failed", "timed_out", "cancelled", "error"}
        deadline = time.monotonic() + timeout
        while True:
            job = await self.job(job_id)
            if job["status"] in statuses:
                return job
            if time.monotonic() > deadline:
                pytest.fail(f"job {job_id} still {job['status']} after {timeout} s")
            await asyncio.sleep(0.05)


@pytest.fixture
async def api(settings: Settings, store: Store) -> AsyncIterator[Api]:
    auth = LocalAuth(settings.secret_key.get_secret_value())  # type: ignore[union-attr]
    app = create_app(build_services(settings, store, auth))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://reporun.test") as client:
        yield Api(client, auth)


WorkerFactory = Callable[..., Worker]


@pytest.fixture
async def start_worker(settings: Settings, store: Store) -> AsyncIterator[WorkerFactory]:
    """Start in-process workers (real sandbox); all are stopped and drained at teardown."""
    require_tool("bwrap", "the job sandbox")
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(**overrides: Any) -> Worker:
        worker_settings = settings.model_copy(update=overrides)
        queue = build_queue(worker_settings, store)
        config = worker_config(worker_settings)
        worker = Worker(
            config=dataclasses.replace(config, worker_id=f"test-{uuid.uuid4().hex[:6]}"),
            store=store,
            queue=queue,
            sandbox=Bubblewrap(),
        )
        stop = asyncio.Event()
        running.append((stop, asyncio.create_task(worker.run(stop))))
        return worker

    yield start
    for stop, _ in running:
        stop.set()
    for _, task in running:
        await asyncio.wait_for(task, 30)
