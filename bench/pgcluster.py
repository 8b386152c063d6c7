"""PostgreSQL for the benchmarks, and reporun in cluster mode on it.

`PgServer` finds the machine's PostgreSQL on 127.0.0.1 (port 5432, or REPORUN_TEST_PG_PORT;
trust auth, user postgres) or starts a throwaway cluster from the installed binaries (the
same as tests/postgres.py, without pytest). `cluster()` gives one measurement a fresh
database, migrates it with `reporun db upgrade`, starts `reporun api` and N `reporun worker`
processes on loopback, and on exit stops every process and drops the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from base import (
    LOOPBACK,
    STARTUP_TIMEOUT,
    STOP_GRACE,
    BenchError,
    Reporun,
    free_port,
    run_command,
    stop_process,
    traversable_dir,
)

CLI_TIMEOUT = 60.0
SQL_TIMEOUT = 600.0  # the bulk inserts of the listing benchmark are the longest statements


class PgServer:
    """The PostgreSQL the benchmarks use: the machine's, or a throwaway cluster of our own."""

    def __init__(self) -> None:
        self.host = LOOPBACK
        self.port = int(os.environ.get("REPORUN_TEST_PG_PORT") or 5432)
        self.cluster: Path | None = None
        self._pg_ctl: list[str] = []

    async def start(self) -> None:
        if not await self._answers():
            await asyncio.to_thread(self._start_throwaway)

    async def _answers(self) -> bool:
        try:
            conn = await asyncpg.connect(self.dsn("postgres"), timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await conn.close()
        return True

    def _start_throwaway(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise BenchError(
                f"no PostgreSQL answers on {self.host}:{self.port} and initdb is missing "
                "(apt-get install postgresql, or run with --no-postgres)"
            )
        bindir = Path(found[-1]).parent
        self.cluster = Path(tempfile.mkdtemp(prefix="reporun-bench-pg-"))
        self.port = free_port()
        prefix: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            entry = pwd.getpwnam("postgres")
            os.chown(self.cluster, entry.pw_uid, entry.pw_gid)
            prefix = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}"]
            prefix += ["--init-groups", "--"]
        data = self.cluster / "data"
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        subprocess.run(
            [*prefix, *initdb, "--no-sync"], check=True, capture_output=True, timeout=120
        )
        options = (
            f"-p {self.port} -k {self.cluster} -c listen_addresses={self.host} "
            "-c max_connections=200"
        )
        self._pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]
        log = str(self.cluster / "log")
        subprocess.run(
            [*self._pg_ctl, "-o", options, "-w", "-t", "60", "-l", log, "start"],
            check=True,
            capture_output=True,
            timeout=120,
        )

    async def stop(self) -> None:
        """Stop the throwaway cluster, if one was started; the machine's is left alone."""
        await asyncio.to_thread(self._stop_throwaway)

    def _stop_throwaway(self) -> None:
        if self.cluster is None:
            return
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                [*self._pg_ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60
            )
        shutil.rmtree(self.cluster, ignore_errors=True)
        self.cluster = None

    @property
    def description(self) -> str:
        kind = "throwaway cluster" if self.cluster else "this machine's server"
        return f"PostgreSQL on {self.host}:{self.port} ({kind})"

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    async def connect(self, database: str) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn(database), timeout=10, command_timeout=SQL_TIMEOUT)

    async def version(self) -> str:
        conn = await self.connect("postgres")
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def database(self) -> AsyncIterator[str]:
        """A fresh, empty database, dropped on exit (even with sessions still in it)."""
        name = f"reporun_bench_{secrets.token_hex(6)}"
        conn = await self.connect("postgres")
        try:
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()
        try:
            yield name
        finally:
            await asyncio.shield(self._drop(name))

    async def _drop(self, name: str) -> None:
        with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
            conn = await self.connect("postgres")
            try:
                await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            finally:
                await conn.close()


def cluster_env(database_url: str, data_dir: Path, work_dir: Path, **extra: str) -> dict[str, str]:
    """This environment without reporun or PostgreSQL settings of its own, plus cluster mode's."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("REPORUN_", "POSTGRES_"))
    }
    env.update(
        REPORUN_DATABASE_URL=database_url,
        REPORUN_ALLOWED_SCHEMES="https,git",
        REPORUN_TRUSTED_HOSTS=LOOPBACK,
        REPORUN_LOG_LEVEL="WARNING",
        # The load is meant to exceed what a user may queue: measure the service, not quotas.
        REPORUN_QUOTA_PENDING="0",
        REPORUN_QUOTA_PER_MINUTE="0",
        REPORUN_DATA_DIR=str(data_dir),
        # Under the benchmark's temporary directory, so it goes with it.
        REPORUN_WORK_DIR=str(work_dir),
    )
    env.update(extra)
    return env


@dataclass
class Cluster:
    """`reporun api` plus workers on one fresh PostgreSQL database."""

    server: PgServer
    root: Path
    name: str
    database: str
    secret: str
    extra_env: dict[str, str] = field(default_factory=dict)
    url: str = ""
    admin: str = ""
    api: asyncio.subprocess.Process | None = None
    workers: list[asyncio.subprocess.Process] = field(default_factory=list)
    worker_logs: list[Path] = field(default_factory=list)
    api_log: Path | None = None
    _numbers: int = 0

    def env(self, data_dir: Path, work_dir: Path, **extra: str) -> dict[str, str]:
        return cluster_env(
            self.server.dsn(self.database),
            data_dir,
            work_dir,
            REPORUN_SECRET_KEY=self.secret,
            **{**self.extra_env, **extra},
        )

    @property
    def api_env(self) -> dict[str, str]:
        return self.env(self.root / f"{self.name}-api", self.root / f"{self.name}-api-work")

    async def cli(self, *args: str) -> str:
        """`python -m reporun ARGS` with the cluster's environment; its stdout."""
        argv = [sys.executable, "-m", "reporun", *args]
        return await run_command(argv, env=self.api_env, timeout=CLI_TIMEOUT)

    async def token(self, name: str, role: str = "user") -> str:
        return (await self.cli("token", "create", name, "--role", role)).splitlines()[-1]

    async def tokens(self, names: list[str], role: str = "user") -> list[str]:
        return list(await asyncio.gather(*(self.token(n, role) for n in names)))

    def reporun(self, token: str | None = None) -> Reporun:
        """The handle (base URL, token, an httpx client) for this cluster."""
        log = self.api_log or self.root / "none.log"
        return Reporun(self.url, token or self.admin, len(self.workers), log)

    async def _spawn(
        self, label: str, args: list[str], env: Mapping[str, str]
    ) -> asyncio.subprocess.Process:
        with self.log_path(label).open("wb") as log:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "reporun",
                *args,
                env=dict(env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )

    def log_path(self, label: str) -> Path:
        return self.root / f"{self.name}-{label}.log"

    async def start_api(self) -> None:
        port = free_port()
        self.api_log = self.log_path("api")
        self.api = await self._spawn("api", ["api", "--port", str(port)], self.api_env)
        self.url = f"http://{LOOPBACK}:{port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0, trust_env=False) as http:
            while True:
                if self.api.returncode is not None:
                    raise BenchError(f"reporun api exited:\n{self.tail(self.api_log)}")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise BenchError(f"reporun api did not answer in {STARTUP_TIMEOUT:.0f} s")
                await asyncio.sleep(0.1)

    async def start_worker(self, **extra: str) -> asyncio.subprocess.Process:
        """One more `reporun worker`, with a data dir (mirror cache) of its own."""
        self._numbers += 1
        label = f"w{self._numbers}"
        env = self.env(
            self.root / f"{self.name}-{label}",
            self.root / f"{self.name}-{label}-work",
            REPORUN_WORKER_ID=f"{self.name}-{label}",
            **extra,
        )
        process = await self._spawn(label, ["worker"], env)
        self.workers.append(process)
        self.worker_logs.append(self.log_path(label))
        return process

    async def wait_workers(self, count: int) -> None:
        """Until `count` workers have registered (their first heartbeat, at start)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            for process, log in zip(self.workers, self.worker_logs, strict=True):
                if process.returncode not in (None, -9):  # -9: killed on purpose
                    raise BenchError(f"a worker exited {process.returncode}:\n{self.tail(log)}")
            if await self.fetchval("SELECT count(*) FROM workers") >= count:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"{count} workers did not register in {STARTUP_TIMEOUT:.0f} s")
            await asyncio.sleep(0.1)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        conn = await self.server.connect(self.database)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await self.server.connect(self.database)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    @staticmethod
    def tail(path: Path, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def stop(self) -> None:
        processes = [p for p in [self.api, *self.workers] if p is not None]
        await asyncio.gather(*(stop_process(p, grace=STOP_GRACE) for p in processes))


@contextlib.asynccontextmanager
async def cluster(
    server: PgServer,
    root: Path,
    name: str,
    *,
    workers: int = 0,
    env: Mapping[str, str] | None = None,
    before_api: Callable[[Cluster], Awaitable[None]] | None = None,
) -> AsyncIterator[Cluster]:
    """A fresh database, migrated; `before_api` (e.g. bulk data) runs before the api starts;
    then the api and `workers` workers, all registered, every process with `env` added to its
    environment. Everything stopped and dropped on exit."""
    traversable_dir(root)
    async with server.database() as database:
        running = Cluster(server, root, name, database, secrets.token_urlsafe(32), dict(env or {}))
        try:
            await running.cli("db", "upgrade")
            if before_api is not None:
                await before_api(running)
            await running.start_api()
            running.admin = await running.token("bench-admin", "admin")
            for _ in range(workers):
                await running.start_worker()
            if workers:
                await running.wait_workers(workers)
            yield running
        finally:
            await asyncio.shield(running.stop())
