"""A real PostgreSQL: the machine's server when it answers, else a throwaway cluster started
from the installed binaries. For the tests, a fresh database per test, copied from a migrated
template; for the benchmarks, fresh empty databases on a durable server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from reporun.store import Store
from reporun.store.migrate import upgrade
from tests.harness import HarnessError
from tests.harness.ports import LOOPBACK, free_port

# One template per test session, so two sessions on one server (a developer's and CI's) never
# drop each other's.
TEMPLATE_PREFIX = "reporun_template_"


def _answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return _psql(host, port, "postgres", "SELECT 1").returncode == 0


def _psql(host: str, port: int, db: str, sql: str) -> subprocess.CompletedProcess[str]:
    psql = shutil.which("psql")
    if psql is None:
        raise HarnessError("psql is required for PostgreSQL; `make test` installs postgresql")
    return subprocess.run(
        [
            psql,
            "-h",
            host,
            "-p",
            str(port),
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-qtAc",
            sql,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
    )


class Postgres:
    """`durable`: a throwaway cluster keeps fsync and synchronous commit (what a benchmark
    measures); the tests' trade them for speed."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.host = LOOPBACK
        self.port = 5432
        self.cluster: Path | None = None
        self.owner: str | None = None
        self.template = f"{TEMPLATE_PREFIX}{os.getpid()}"

    def start(self) -> None:
        configured = os.environ.get("REPORUN_TEST_PG_PORT")
        if configured:
            self.port = int(configured)
        if _answers(self.host, self.port):
            return
        self._start_throwaway()

    def start_throwaway(
        self, *, also_listen: str | None = None, trust_from: str | None = None
    ) -> None:
        """A cluster of the test's own, which it may stop and start (`stop_server`); with
        `also_listen` (an address of the test's own hosts, or 0.0.0.0), reachable there too,
        from `trust_from` (a CIDR; default the /24 of `also_listen`)."""
        self._start_throwaway(also_listen, trust_from)

    def _pg_ctl(self, *args: str) -> None:
        assert self.cluster is not None
        subprocess.run(
            [*self._prefix, str(self._bindir / "pg_ctl"), "-D", str(self.cluster / "data"), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def stop_server(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")

    def start_server(self) -> None:
        assert self.cluster is not None
        log = str(self.cluster / "log")
        self._pg_ctl("-o", self._options, "-w", "-t", "60", "-l", log, "start")

    def _start_throwaway(
        self, also_listen: str | None = None, trust_from: str | None = None
    ) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise HarnessError(
                f"no PostgreSQL answers on {self.host}:{self.port} and initdb is missing "
                "(apt-get install postgresql)"
            )
        bindir = Path(found[-1]).parent
        self.cluster = Path(tempfile.mkdtemp(prefix="reporun-pg-"))
        self.port = free_port()
        prefix: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            self.owner = "postgres"
            entry = pwd.getpwnam(self.owner)
            os.chown(self.cluster, entry.pw_uid, entry.pw_gid)
            prefix = [
                "setpriv",
                f"--reuid={entry.pw_uid}",
                f"--regid={entry.pw_gid}",
                "--init-groups",
                "--",
            ]
        data = self.cluster / "data"
        subprocess.run(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        listen = "127.0.0.1" + (f",{also_listen}" if also_listen else "")
        if also_listen in ("0.0.0.0", "*"):  # every address; loopback too
            listen = "*"
        if also_listen:
            with (data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {trust_from or also_listen + '/24'} trust\n")
        options = f"-p {self.port} -k {self.cluster} -c listen_addresses={listen}"
        options += " -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._prefix = prefix
        self._bindir = bindir
        self._options = options
        self.start_server()

    def stop(self) -> None:
        if self.cluster is None:
            _psql(self.host, self.port, "postgres", f"DROP DATABASE IF EXISTS {self.template}")
            return
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(self.cluster, ignore_errors=True)

    @property
    def throwaway(self) -> bool:
        return self.cluster is not None

    def url(self, database: str) -> str:
        """SQLAlchemy's URL of `database` (asyncpg)."""
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{database}"

    def dsn(self, database: str) -> str:
        """libpq's URL of `database`, as asyncpg and reporun's settings take it."""
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def sql(self, sql: str, database: str = "postgres") -> str:
        result = _psql(self.host, self.port, database, sql)
        if result.returncode != 0:
            raise HarnessError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def prepare_template(self) -> None:
        """A migrated database that each test's database is copied from (fast)."""
        self._drop_stale_templates()
        self.sql(f"DROP DATABASE IF EXISTS {self.template}")
        self.sql(f"CREATE DATABASE {self.template}")

        async def migrate() -> None:
            store = Store.open(self.url(self.template))
            try:
                await upgrade(store.engine)
            finally:
                await store.close()

        # The first test to ask may already run an event loop: migrate on a thread of its own.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, migrate()).result()

    def _drop_stale_templates(self) -> None:
        """Templates of sessions whose process is gone (killed before it could drop them)."""
        names = self.sql(f"SELECT datname FROM pg_database WHERE datname LIKE '{TEMPLATE_PREFIX}%'")
        for name in names.split():
            pid = name.removeprefix(TEMPLATE_PREFIX)
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                _psql(self.host, self.port, "postgres", f"DROP DATABASE IF EXISTS {name}")

    def create_database(self, *, migrated: bool = True) -> str:
        name = f"reporun_t_{secrets.token_hex(6)}"
        template = f" TEMPLATE {self.template}" if migrated else ""
        deadline = time.monotonic() + 30
        while True:
            result = _psql(self.host, self.port, "postgres", f"CREATE DATABASE {name}{template}")
            if result.returncode == 0:
                return name
            # Another session may still be leaving the template: try again shortly.
            if time.monotonic() > deadline:
                raise HarnessError(f"cannot create a database: {result.stderr.strip()}")
            time.sleep(0.1)

    def drop_database(self, name: str) -> None:
        _psql(self.host, self.port, "postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
