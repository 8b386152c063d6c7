"""The app in-process (real SQLite), workers in-process (real git, real bubblewrap)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from reporun.api.app import create_app
from reporun.api.auth import LocalAuth
from reporun.api.server import build_services
from reporun.config import Settings
from reporun.jobs import TERMINAL
from reporun.queue import QueueBackend
from reporun.store import Store
from reporun.store.tokens import TokenRecord
from reporun.wiring import build_queue
from reporun.worker.loop import Worker
from reporun.worker.main import worker_config
from reporun.worker.sandbox import Bubblewrap, Sandbox
from tests.harness.client import Client
from tests.harness.processes import require_tool


@dataclass
class Api:
    """The harness's client on the in-process app, each call with a token of its own."""

    client: httpx.AsyncClient
    auth: LocalAuth
    jobs: Client = field(init=False)
    unrecorded: list[TokenRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.jobs = Client(self.client)
        self.client.event_hooks["request"].append(self.record_tokens)

    def headers(self, name: str = "alice", role: str = "user") -> dict[str, str]:
        issued = self.auth.mint(name, role)
        self.unrecorded.append(issued.record)
        return {"Authorization": f"Bearer {issued.token}"}

    async def record_tokens(self, _request: httpx.Request) -> None:
        """Before each request: record the tokens `headers` minted in the server's database, as
        `reporun token create` does (a token not recorded there is refused)."""
        while self.unrecorded:
            await self.auth.tokens.add(self.unrecorded.pop())

    async def submit(self, name: str = "alice", role: str = "user", **body: Any) -> dict[str, Any]:
        return await self.jobs.submit(headers=self.headers(name, role), **body)

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self.jobs.job(job_id, headers=self.headers("root", "admin"))

    async def log(self, job_id: str) -> bytes:
        return await self.jobs.log(job_id, headers=self.headers("root", "admin"))

    async def wait(
        self, job_id: str, statuses: Collection[str] = TERMINAL, timeout: float = 60
    ) -> dict[str, Any]:
        """Poll until the job is in one of `statuses` (default: any end)."""
        return await self.jobs.wait(
            job_id, statuses, timeout=timeout, headers=self.headers("root", "admin")
        )


@pytest.fixture
async def api(settings: Settings, store: Store) -> AsyncIterator[Api]:
    auth = LocalAuth(settings.secret_key.get_secret_value(), store.tokens)  # type: ignore[union-attr]
    app = create_app(build_services(settings, store, auth))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://reporun.test") as client:
        yield Api(client, auth)
    # The transport runs no lifespan: end the events' hub here, as the app's shutdown would
    # (a read of it cut off with the test's loop would leave a connection unclosed).
    await app.state.log_hub.close()


WorkerFactory = Callable[..., Worker]


@pytest.fixture
async def start_worker(settings: Settings, store: Store) -> AsyncIterator[WorkerFactory]:
    """Start in-process workers (real sandbox); all are stopped and drained at teardown."""
    require_tool("bwrap", "the job sandbox")
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(**overrides: Any) -> Worker:
        worker = new_worker(settings.model_copy(update=overrides), store)
        stop = asyncio.Event()
        running.append((stop, asyncio.create_task(worker.run(stop))))
        return worker

    yield start
    for stop, _ in running:
        stop.set()
    for _, task in running:
        await asyncio.wait_for(task, 30)


def new_worker(
    settings: Settings,
    store: Store,
    *,
    queue: QueueBackend | None = None,
    sandbox: Sandbox | None = None,
    worker_id: str | None = None,
) -> Worker:
    """An in-process worker: the one place the tests build one. By default on the SQL queue
    with the settings' lease and poll, in bubblewrap."""
    config = worker_config(settings)
    return Worker(
        config=dataclasses.replace(config, worker_id=worker_id or f"test-{uuid.uuid4().hex[:6]}"),
        store=store,
        queue=queue or build_queue(settings, store),
        sandbox=sandbox or Bubblewrap(),
    )
