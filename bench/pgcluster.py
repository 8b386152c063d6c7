"""reporun in cluster mode on PostgreSQL, for the benchmarks.

The PostgreSQL is the harness's (tests/harness/postgres.py): the machine's server on
127.0.0.1 (port 5432, or REPORUN_TEST_PG_PORT), else a throwaway cluster of our own, durable
as a deployed one. `cluster()` gives one measurement a fresh database, migrates it with
`reporun db upgrade`, starts `reporun api` and N `reporun worker` processes on loopback, and on
exit stops every process and drops the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import asyncpg
from base import STOP_GRACE, BenchError, traversable_dir
from tests.harness import HarnessError
from tests.harness.ports import LOOPBACK
from tests.harness.postgres import Postgres
from tests.harness.processes import Process, Processes
from tests.harness.server import STARTUP_TIMEOUT, Server

SQL_TIMEOUT = 600.0  # the bulk inserts of the listing benchmark are the longest statements


async def start_postgres() -> Postgres:
    """The machine's PostgreSQL, or a durable throwaway cluster; `stop_postgres` it."""
    server = Postgres(durable=True)
    try:
        await asyncio.to_thread(server.start)
    except HarnessError as exc:
        raise BenchError(f"{exc} (or run with --no-postgres)") from exc
    return server


async def stop_postgres(server: Postgres) -> None:
    """Stop the throwaway cluster, if one was started; the machine's is left alone."""
    await asyncio.to_thread(server.stop)


def description(server: Postgres) -> str:
    kind = "throwaway cluster" if server.throwaway else "this machine's server"
    return f"PostgreSQL on {server.host}:{server.port} ({kind})"


async def connect(server: Postgres, database: str) -> asyncpg.Connection:
    return await asyncpg.connect(server.dsn(database), timeout=10, command_timeout=SQL_TIMEOUT)


async def version(server: Postgres) -> str:
    conn = await connect(server, "postgres")
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_database(server: Postgres) -> AsyncIterator[str]:
    """A fresh, empty database, dropped on exit (even with sessions still in it)."""
    name = await asyncio.to_thread(server.create_database, migrated=False)
    try:
        yield name
    finally:
        await asyncio.shield(asyncio.to_thread(server.drop_database, name))


class Cluster:
    """`reporun api` plus workers on one fresh PostgreSQL database. Each process has a data
    dir (mirror cache) and workspaces of its own under `root`, which goes with the benchmark."""

    def __init__(
        self, postgres: Postgres, root: Path, name: str, database: str, env: Mapping[str, str]
    ) -> None:
        self.postgres = postgres
        self.root = root
        self.name = name
        self.database = database
        self.processes = Processes()
        self.workers: list[Process] = []
        settings = {
            "REPORUN_DATABASE_URL": postgres.dsn(database),
            "REPORUN_SECRET_KEY": secrets.token_urlsafe(32),
            "REPORUN_ALLOWED_SCHEMES": "https,git",
            "REPORUN_TRUSTED_HOSTS": LOOPBACK,
            # The load is meant to exceed what a user may queue: measure the service, not quotas.
            "REPORUN_QUOTA_PENDING": "0",
            "REPORUN_QUOTA_PER_MINUTE": "0",
            "REPORUN_WORK_DIR": str(root / f"{name}-api-work"),
            **env,
        }
        self.api = Server(self.processes, root / f"{name}-api", **settings)

    def log_path(self, label: str) -> Path:
        return self.root / f"{self.name}-{label}.log"

    async def token(self, name: str, role: str = "user") -> str:
        return await asyncio.to_thread(self.api.mint, name, role)

    async def tokens(self, names: list[str], role: str = "user") -> list[str]:
        return list(await asyncio.gather(*(self.token(n, role) for n in names)))

    async def start_api(self) -> None:
        """`reporun api`, once /readyz answers (its database too)."""
        await asyncio.to_thread(self.api.api, self.log_path("api"), ready="/readyz")

    def start_worker(self, **extra: str) -> Process:
        """One more `reporun worker`, with a data dir (mirror cache) of its own."""
        label = f"w{len(self.workers) + 1}"
        process = self.api.start(
            self.log_path(label),
            "worker",
            REPORUN_DATA_DIR=str(self.root / f"{self.name}-{label}"),
            REPORUN_WORK_DIR=str(self.root / f"{self.name}-{label}-work"),
            REPORUN_WORKER_ID=f"{self.name}-{label}",
            **extra,
        )
        self.workers.append(process)
        return process

    async def kill_worker(self, process: Process) -> None:
        """SIGKILL, as a crash would; until it is gone."""
        await asyncio.to_thread(process.stop, signal.SIGKILL)

    async def wait_workers(self, count: int) -> None:
        """Until `count` workers have registered (their first heartbeat, at start)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            for process in self.workers:
                if process.returncode not in (None, -signal.SIGKILL):  # killed on purpose
                    raise BenchError(f"a worker exited {process.returncode}:\n{process.tail(2000)}")
            if await self.fetchval("SELECT count(*) FROM workers") >= count:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"{count} workers did not register in {STARTUP_TIMEOUT:.0f} s")
            await asyncio.sleep(0.1)

    async def connect(self) -> asyncpg.Connection:
        return await connect(self.postgres, self.database)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        conn = await self.connect()
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await self.connect()
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def stop(self) -> None:
        await asyncio.to_thread(self.processes.stop, STOP_GRACE)


@contextlib.asynccontextmanager
async def cluster(
    postgres: Postgres,
    root: Path,
    name: str,
    *,
    workers: int = 0,
    env: Mapping[str, str] | None = None,
    before_api: Callable[[Cluster], Awaitable[None]] | None = None,
) -> AsyncIterator[Cluster]:
    """A fresh database, migrated; `before_api` (e.g. bulk data) runs before the api starts;
    then the api (with an admin token) and `workers` workers, all registered, every process
    with `env` added to its environment. Everything stopped and dropped on exit."""
    traversable_dir(root)
    async with fresh_database(postgres) as database:
        running = Cluster(postgres, root, name, database, dict(env or {}))
        try:
            await asyncio.to_thread(running.api.upgrade)
            if before_api is not None:
                await before_api(running)
            # The workers and the admin token need only the database: all three start at once.
            for _ in range(workers):
                running.start_worker()
            api = asyncio.ensure_future(running.start_api())
            try:
                running.api.token = await running.token("bench-admin", "admin")
            finally:
                await api
            if workers:
                await running.wait_workers(workers)
            yield running
        finally:
            await asyncio.shield(running.stop())
