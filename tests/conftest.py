"""Fixtures shared by every test layer: settings, a real git server, the store, PostgreSQL.
The parts themselves are in tests/harness, which the benchmarks use too."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from reporun.config import Settings
from reporun.store import Store
from reporun.store.migrate import upgrade
from tests import prebuild
from tests.harness import HarnessError
from tests.harness.git import GitServer
from tests.harness.kafka import Broker
from tests.harness.postgres import Postgres

if TYPE_CHECKING:
    import subprocess

pytest_plugins = ["tests.oidc_provider", "tests.podman", "tests.runtime_image"]


def pytest_sessionstart(session: pytest.Session) -> None:
    """In the run's first process (xdist's controller, or the only one): the images some tests
    need start building now, beside the tests (tests/prebuild.py)."""
    config = session.config
    if hasattr(config, "workerinput") or config.option.collectonly:
        return
    if prebuild.wanted([str(arg) for arg in config.args], config.invocation_params.dir):
        log = Path(tempfile.gettempdir()) / f"reporun-prebuild-{secrets.token_hex(4)}.log"
        config.stash[PREBUILD] = (prebuild.start(log), log)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if (started := session.config.stash.get(PREBUILD, None)) is not None:
        process, log = started
        if prebuild.stop(process) == 0:
            log.unlink(missing_ok=True)  # else kept: the tests' failures point at the same


PREBUILD = pytest.StashKey[tuple["subprocess.Popen[bytes]", Path]]()


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


def _harness_failures(item: pytest.Item) -> Generator[None, None, None]:
    """The harness raises plain HarnessErrors (the benchmarks run without pytest): in a test's
    setup, call or teardown one fails the test with its message."""
    __tracebackhide__ = True
    try:
        return (yield)
    except HarnessError as exc:
        pytest.fail(str(exc))


pytest_runtest_setup = pytest.hookimpl(wrapper=True)(_harness_failures)
pytest_runtest_call = pytest.hookimpl(wrapper=True)(_harness_failures)
pytest_runtest_teardown = pytest.hookimpl(wrapper=True)(_harness_failures)


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


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[Broker]:
    """A Kafka-protocol broker (Tansu) of the test's own."""
    broker = Broker(tmp_path / "tansu.log")
    broker.start()
    yield broker
    broker.kill()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files with slow tests first (their order kept, and each file's own): the processes
    sharing the run take whole files in this order, and a long file taken last would keep the
    run waiting on it alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
