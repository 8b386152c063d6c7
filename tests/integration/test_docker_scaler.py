"""The docker scaler on podman's Docker API: the observer grows a Compose `worker` service,
shrinks it by retiring idle containers only, and a retired busy container finishes its job
before it goes. Real containers of the reporun image, running real jobs in bubblewrap, against
a PostgreSQL and a git daemon on the host."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from reporun.errors import ConfigError
from reporun.jobs import JobSpec, JobStatus, Limits
from reporun.observer.docker import DockerScaler
from reporun.observer.loop import Observer
from reporun.observer.policy import PolicySettings
from reporun.queue import QueueConfig
from reporun.queue.sql import SqlQueue
from reporun.store import Store
from tests.harness.git import GitServer
from tests.harness.postgres import Postgres
from tests.podman import BUILD_TIMEOUT, HOST_ADDRESS, WORKER_SECURITY_OPT, Compose, Podman

pytestmark = [pytest.mark.slow, pytest.mark.timeout(BUILD_TIMEOUT)]

LIMITS = Limits(timeout=120, memory=1 << 30, processes=64, log=1 << 20, disk=256 << 20)
# Podman's networks are carved out of 10.88.0.0/13 (the default one and each compose
# project's): the containers reach the host's PostgreSQL from there.
CONTAINER_NETWORKS = "10.88.0.0/13"


@pytest.fixture(scope="module")
def host_postgres() -> Iterator[Postgres]:
    server = Postgres()
    server.start_throwaway(also_listen="0.0.0.0", trust_from=CONTAINER_NETWORKS)
    server.prepare_template()
    yield server
    server.stop()


def compose_file(path: Path, image: str, database_url: str) -> Path:
    lines = [
        "services:",
        "  worker:",
        f"    image: {image}",
        '    command: ["worker"]',
        "    init: true",
        "    restart: on-failure",
        "    stop_grace_period: 30s",
        "    security_opt:",
        *(f"      - {opt}" for opt in WORKER_SECURITY_OPT),
        "    environment:",
        f"      REPORUN_DATABASE_URL: {database_url}",
        "      REPORUN_ALLOWED_SCHEMES: git",
        f"      REPORUN_TRUSTED_HOSTS: {HOST_ADDRESS}",
        '      REPORUN_POLL_INTERVAL: "0.1"',
        '      REPORUN_LEASE_SECONDS: "10"',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def until(
    what: str,
    check: Callable[[], object],
    timeout: float = 60,
    explain: Callable[[], str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s\n{explain() if explain else ''}")
        await asyncio.sleep(0.25)


@pytest.fixture
def database(host_postgres: Postgres) -> Iterator[str]:
    name = host_postgres.create_database()
    yield name
    host_postgres.drop_database(name)


@pytest.fixture
async def store(host_postgres: Postgres, database: str) -> AsyncIterator[Store]:
    store = Store.open(host_postgres.url(database))
    yield store
    await store.close()


async def test_the_docker_scaler_grows_and_drains_a_compose_service(
    podman: Podman,
    host_postgres: Postgres,
    host_git: GitServer,
    database: str,
    store: Store,
    tmp_path: Path,
) -> None:
    url = f"postgresql://postgres@{HOST_ADDRESS}:{host_postgres.port}/{database}"
    project: Compose = podman.compose(compose_file(tmp_path / "compose.yaml", podman.image, url))
    project.up(scale={"worker": 1})
    queue = SqlQueue(
        store, QueueConfig(lease_seconds=10, max_attempts=3, poll_interval=0.1, notify=False)
    )
    scaler = DockerScaler(
        project=project.project,
        service="worker",
        docker_host=podman.docker_host,
        security_opt=WORKER_SECURITY_OPT,
    )
    observer = Observer(
        store=store,
        queue=queue,
        scaler=scaler,
        policy=PolicySettings(min_workers=3, max_workers=3, cooldown=0),
    )

    def logs() -> str:
        return "\n".join(
            f"--- {c['Names']} {c['State']}\n" + _tail(podman.cli("logs", c["Id"], check=False))
            for c in project.containers("worker")
        )

    try:
        await scaler.prepare()
        # Out: the pool is below its minimum; two more replicas like the first.
        decision = await observer.tick()
        assert (decision.direction, decision.desired) == ("out", 3)
        assert len(project.ps("worker")) == 3
        await until("three workers registered", lambda: _count_workers(store, 3), 90, logs)
        numbers = sorted(
            int(c["Labels"]["com.docker.compose.container-number"])
            for c in project.containers("worker")
        )
        assert numbers == [1, 2, 3]

        # A long job on one of them.
        repo = host_git.make_repo({"run.sh": "#!/bin/sh\nsleep 8\necho survived\n"})
        repo = repo.replace("0.0.0.0", HOST_ADDRESS)
        job = await queue.submit(JobSpec(repo=repo, limits=LIMITS), "alice")
        await until("the job runs", lambda: _status(store, job.id, JobStatus.RUNNING), 60)
        holder = (await store.get_job(job.id)).worker
        assert holder is not None

        # In: down to one, and the one left is the busy one.
        observer.policy = PolicySettings(min_workers=1, max_workers=1, cooldown=0)
        decision = await observer.tick()
        assert (decision.direction, decision.desired) == ("in", 1)
        await until(
            "two containers retired and removed", lambda: len(project.containers("worker")) == 1, 60
        )
        [left] = project.ps("worker")
        assert holder.startswith(left[:12])
        assert (await store.get_job(job.id)).status is JobStatus.RUNNING

        # Retiring the busy one drains it: the job ends well, then the container exits 0 and
        # stays (stopped) as the template of the next replica.
        await scaler.retire([left])
        assert await scaler.members() == []
        await until("the job ended", lambda: _status(store, job.id, JobStatus.SUCCEEDED), 60, logs)
        ended = await store.get_job(job.id)
        assert ended.attempts == 1 and ended.exit_code == 0
        await until(
            "the container exited",
            lambda: [c["State"] for c in project.containers("worker")] == ["exited"],
            60,
            logs,
        )
        [kept] = project.containers("worker")
        assert kept["State"] == "exited"
        inspect = podman.cli("inspect", left, "--format", "{{.State.ExitCode}}").stdout.strip()
        assert inspect == "0"
        log = podman.cli("logs", left).stderr + podman.cli("logs", left).stdout
        assert "retiring after this job" in log and "retired by scale-in" in log

        # Out again from zero: the stopped replica starts again.
        assert await scaler.add(1) == 1
        assert running(project) == [left]
        decisions = await store.scaling.decisions()
        assert [d.direction for d in decisions] == ["in", "out"]
        assert decisions[0].scaler == "docker" and decisions[0].actual == 3
    finally:
        await scaler.close()
        await queue.close()


async def _count_workers(store: Store, count: int) -> bool:
    return len(await store.list_workers()) == count


async def _status(store: Store, job_id: object, status: JobStatus) -> bool:
    return (await store.get_job(job_id)).status is status  # type: ignore[arg-type]


def _tail(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout + result.stderr)[-1500:]


def running(project: Compose) -> list[str]:
    return [c["Id"] for c in project.containers("worker") if c["State"] == "running"]


async def test_the_docker_scaler_refuses_templates_it_must_not_copy(
    podman: Podman, tmp_path: Path
) -> None:
    """A worker service running as root (with /proc unmasked it could write host sysctls),
    one that restarts always (a retired worker would come back), or none at all: one line."""
    lines = ["services:"]
    for service, extra in (
        ("rootworker", ['    user: "0"']),
        ("alwaysworker", ["    restart: always"]),
    ):
        lines += [
            f"  {service}:",
            f"    image: {podman.image}",
            '    entrypoint: ["sleep", "infinity"]',
            "    init: true",
            *extra,
        ]
    path = tmp_path / "compose.yaml"
    path.write_text("\n".join(lines) + "\n")
    project = podman.compose(path)
    project.up()
    for service, message in (
        ("rootworker", "run as root"),
        ("alwaysworker", "restart: on-failure"),
        ("missing", "bring the service up once"),
    ):
        scaler = DockerScaler(
            project=project.project,
            service=service,
            docker_host=podman.docker_host,
        )
        try:
            with pytest.raises(ConfigError, match=message):
                await scaler.prepare()
        finally:
            await scaler.close()
    nowhere = DockerScaler(
        project="p", service="worker", docker_host=f"unix://{tmp_path}/none.sock"
    )
    try:
        with pytest.raises(ConfigError, match="DOCKER_HOST"):
            await nowhere.prepare()
    finally:
        await nowhere.close()
