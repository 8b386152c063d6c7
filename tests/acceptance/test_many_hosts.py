"""Workers on several hosts (network namespaces of the suite's own, on a bridge) share one
PostgreSQL and one git server across the network."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest

from reporun.jobs import TERMINAL
from tests.harness.git import GitServer
from tests.harness.postgres import Postgres
from tests.harness.processes import Process, Processes, require_tool
from tests.harness.server import Server
from tests.netns import Hosts


class Network:
    def __init__(
        self, tmp_path: Path, processes: Processes, hosts: Hosts, **server_env: str
    ) -> None:
        self.tmp_path = tmp_path
        self.hosts = hosts
        self.postgres = Postgres()
        self.postgres.start_throwaway(also_listen=hosts.gateway)
        database = self.postgres.create_database(migrated=False)
        self.git = GitServer(tmp_path / "git-base", tmp_path / "git-work", host=hosts.gateway)
        self.git.base.mkdir()
        self.git.work.mkdir()
        self.git.start()
        self.server = Server(
            processes,
            tmp_path / "data",
            REPORUN_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{self.postgres.port}/{database}",
            REPORUN_SECRET_KEY=secrets.token_urlsafe(32),
            REPORUN_ALLOWED_SCHEMES="https,git",
            REPORUN_TRUSTED_HOSTS=hosts.gateway,
            REPORUN_POLL_INTERVAL="0.1",
            **server_env,
        )
        self.worker_env = {
            "REPORUN_LOG_LEVEL": "INFO",
            "REPORUN_DATABASE_URL": (
                f"postgresql://postgres@{hosts.gateway}:{self.postgres.port}/{database}"
            ),
        }
        self.server.upgrade()
        self.server.api(tmp_path / "api.log")
        self.api = self.server.blocking_client(self.server.mint("root", "admin"), poll=0.1)
        self.workers: list[Process] = []

    def worker(self, host: int, **env: str) -> Process:
        worker_env = {
            **self.worker_env,
            "REPORUN_WORKER_ID": f"host-{host}",
            "REPORUN_DATA_DIR": str(self.tmp_path / f"host-{host}"),  # each host its disk
            **env,
        }
        log = self.tmp_path / f"worker-{host}.log"
        process = self.server.start(log, "worker", prefix=self.hosts.prefix(host), **worker_env)
        self.workers.append(process)
        return process

    def wait(self, job_id: str, statuses: Collection[str], timeout: float = 60) -> dict[str, Any]:
        return self.api.wait(job_id, statuses, timeout=timeout, explain=self.logs)

    def logs(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.tail(1500)}" for p in self.workers)

    def close(self) -> None:
        self.api.close()
        self.git.stop()
        self.postgres.stop()


@pytest.fixture
def network(tmp_path: Path, processes: Processes) -> Iterator[Network]:
    require_tool("bwrap", "the job sandbox")
    hosts = Hosts(2)
    try:
        hosts.up()
        net = Network(tmp_path, processes, hosts)
        try:
            yield net
        finally:
            for process in processes:
                if process.popen.poll() is None:
                    process.stop()
            net.close()
    finally:
        hosts.down()


def test_workers_on_two_hosts_share_the_jobs(network: Network) -> None:
    for host in range(2):
        network.worker(host)
    repo = network.git.make_repo({"run.sh": "#!/bin/sh\nsleep 0.2\necho across the bridge\n"})
    ids = [network.api.submit(repo)["id"] for _ in range(16)]
    jobs = [network.wait(i, TERMINAL) for i in ids]
    assert {j["status"] for j in jobs} == {"succeeded"}, jobs
    assert {j["worker"] for j in jobs} == {"host-0", "host-1"}


def test_a_worker_cut_off_mid_job_neither_reports_nor_runs_it_twice(network: Network) -> None:
    repo = network.git.make_repo({"run.sh": "#!/bin/sh\necho start\nsleep 6\necho done\n"})
    lost = network.worker(0, REPORUN_LEASE_SECONDS="3")
    job_id = network.api.submit(repo)["id"]
    network.wait(job_id, {"running"})
    network.hosts.cut(0)
    try:
        survivor = network.worker(1, REPORUN_LEASE_SECONDS="3")
        ended = network.wait(job_id, TERMINAL)
        assert ended["status"] == "succeeded" and ended["worker"] == "host-1", ended
        assert ended["attempts"] == 2
    finally:
        network.hosts.mend(0)
    time.sleep(4)  # the lost worker reconnects; its report must not land
    assert network.api.job(job_id) == ended
    log = network.api.log(job_id).decode()
    assert log.count("done") == 1, log
    lost_log = lost.log.read_text()
    assert "lease lost; stopping the run" in lost_log, lost_log[-3000:]
    assert survivor.popen.poll() is None


def test_hosts_are_really_apart(network: Network) -> None:
    """The workers' hosts reach the database through the bridge, not a shared loopback."""
    probe = subprocess.run(
        [
            *network.hosts.prefix(0),
            "python3",
            "-c",
            f"import socket; socket.create_connection(('127.0.0.1', {network.postgres.port}), 2)",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.returncode != 0
