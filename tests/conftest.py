"""Fixtures shared by every test layer: settings, a real git server, the store, the app."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from reporun.config import Settings
from reporun.store import Store
from reporun.store.migrate import upgrade
from tests.postgres import Postgres

pytest_plugins = ["tests.oidc_provider", "tests.podman"]


def require_tool(name: str, why: str) -> str:
    """A component a test needs; missing, the test fails (never skips)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is required for {why}; `make test` installs it when run as root")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def processes_with(marker: str) -> list[str]:
    """Command lines of live processes on the host that mention `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline and "pytest" not in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def run_git(*args: str, cwd: Path | None = None) -> str:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(cwd or "/tmp"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.org",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.org",
    }
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


class GitServer:
    """`git daemon` on loopback serving bare repositories the tests create."""

    def __init__(self, base: Path, work: Path, host: str = "127.0.0.1") -> None:
        self.base = base
        self.work = work
        self.host = host
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        require_tool("git", "the git server of the tests")
        self.process = subprocess.Popen(
            [
                "git",
                "daemon",
                "--reuseaddr",
                "--export-all",
                f"--listen={self.host}",
                f"--port={self.port}",
                f"--base-path={self.base}",
                str(self.base),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # `git daemon` forks the real server: stop the group
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail("git daemon did not start")

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def url(self, name: str) -> str:
        return f"git://{self.host}:{self.port}/{name}.git"

    def make_repo(
        self,
        files: dict[str, str],
        *,
        executable: tuple[str, ...] = ("run.sh",),
        name: str | None = None,
    ) -> str:
        """A repository with `files` (one commit, branch main); returns its git:// URL."""
        name = name or f"repo-{secrets.token_hex(4)}"
        source = self.work / name
        source.mkdir(parents=True)
        run_git("init", "-q", "-b", "main", cwd=source)
        self.commit(source, files, executable=executable)
        run_git("clone", "-q", "--bare", str(source), str(self.base / f"{name}.git"))
        return self.url(name)

    def commit(
        self, source: Path, files: dict[str, str], *, executable: tuple[str, ...] = ("run.sh",)
    ) -> str:
        for path, text in files.items():
            target = source / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            if path in executable:
                target.chmod(0o755)
        run_git("add", "-A", cwd=source)
        run_git("commit", "-q", "--allow-empty", "-m", "change", cwd=source)
        return run_git("rev-parse", "HEAD", cwd=source)

    def push(self, name: str, files: dict[str, str]) -> str:
        """A new commit on main of an existing repository; returns its SHA."""
        source = self.work / name
        sha = self.commit(source, files)
        run_git("push", "-q", str(self.base / f"{name}.git"), "main", cwd=source)
        return sha


@pytest.fixture(scope="session")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    server = GitServer(tmp_path_factory.mktemp("git-base"), tmp_path_factory.mktemp("git-work"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        allowed_schemes=["https", "git"],
        trusted_hosts=["127.0.0.1"],
        secret_key=secrets.token_urlsafe(32),
        lease_seconds=3,
        poll_interval=0.05,
        drain_grace=5,
    )


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    store = Store.open(settings.db_url)
    await upgrade(store.engine)
    yield store
    await store.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    server.start()
    server.prepare_template()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres: Postgres) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    name = postgres.create_database()
    yield postgres.url(name)
    postgres.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, settings: Settings) -> str:
    """Each store and queue test runs on both databases."""
    if request.param == "sqlite":
        return settings.db_url
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def any_store(db_url: str) -> AsyncIterator[Store]:
    store = Store.open(db_url)
    await upgrade(store.engine)
    yield store
    await store.close()
