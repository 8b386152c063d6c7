"""Cluster mode on PostgreSQL: `reporun api` and several `reporun worker` processes."""

from __future__ import annotations

import concurrent.futures
import secrets
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.harness.git import GitServer
from tests.harness.postgres import Postgres
from tests.harness.processes import Process, Processes, require_tool
from tests.harness.server import Server

# Among the longest files: started first, so the run does not end waiting on it.
pytestmark = pytest.mark.slow


class PgCluster:
    def __init__(self, tmp_path: Path, processes: Processes, database_url: str) -> None:
        require_tool("bwrap", "the job sandbox")
        self.tmp_path = tmp_path
        self.server = Server(
            processes,
            tmp_path / "data",
            REPORUN_DATABASE_URL=database_url,
            REPORUN_SECRET_KEY=secrets.token_urlsafe(32),
            REPORUN_ALLOWED_SCHEMES="https,git",
            REPORUN_TRUSTED_HOSTS="127.0.0.1",
        )
        self.server.upgrade()
        self.server.api(tmp_path / "api.log")
        self.base = self.server.url

    def start(self, name: str, *args: str, **env: str) -> Process:
        return self.server.start(self.tmp_path / f"{name}.log", *args, **env)

    def token(self, name: str, role: str = "user") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.server.mint(name, role)}"}


@pytest.fixture
def pg_cluster(tmp_path: Path, processes: Processes, postgres_url: str) -> PgCluster:
    return PgCluster(tmp_path, processes, postgres_url.replace("+asyncpg", ""))


def test_four_workers_run_every_job_exactly_once(
    pg_cluster: PgCluster, git_server: GitServer
) -> None:
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho ran\n"})
    for n in range(4):
        pg_cluster.start(f"worker{n}", "worker", REPORUN_WORKER_ID=f"worker-{n}")
    submitters = [pg_cluster.token(f"user{n}") for n in range(4)]
    per_submitter = 40

    def submit_all(headers: dict[str, str]) -> list[str]:
        with httpx.Client(base_url=pg_cluster.base, headers=headers, timeout=30) as client:
            ids = []
            for _ in range(per_submitter):
                response = client.post("/v1/jobs", json={"repo": repo, "command": "echo ran"})
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
            return ids

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        submitted = [i for ids in pool.map(submit_all, submitters) for i in ids]
    assert len(set(submitted)) == 4 * per_submitter
    admin = pg_cluster.token("root", "admin")
    deadline = time.monotonic() + 240
    while True:
        jobs = []
        cursor = None
        with httpx.Client(base_url=pg_cluster.base, headers=admin, timeout=30) as client:
            while True:
                params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
                page = client.get("/v1/jobs", params=params).json()
                jobs += page["items"]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
        pending = [j for j in jobs if j["status"] in ("queued", "running")]
        if not pending:
            break
        assert time.monotonic() < deadline, f"{len(pending)} jobs still pending"
        time.sleep(0.5)
    assert sorted(j["id"] for j in jobs) == sorted(submitted)
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert {j["attempts"] for j in jobs} == {1}
    workers = {j["worker"] for j in jobs}
    assert len(workers) >= 2, workers  # the work spread over the workers


def test_restarting_postgresql_loses_nothing(
    tmp_path: Path, processes: Processes, git_server: GitServer
) -> None:
    server = Postgres()
    server.start_throwaway()
    try:
        name = server.create_database(migrated=False)
        cluster = PgCluster(tmp_path, processes, server.url(name).replace("+asyncpg", ""))
        for n in range(2):
            cluster.start(f"worker{n}", "worker", REPORUN_LEASE_SECONDS="10")
        headers = cluster.token("alice")
        repo = git_server.make_repo({"run.sh": "#!/bin/sh\nsleep 1\necho survived\n"})
        accepted: list[str] = []
        with httpx.Client(base_url=cluster.base, headers=headers, timeout=30) as client:
            for _ in range(6):
                response = client.post("/v1/jobs", json={"repo": repo})
                assert response.status_code == 202
                accepted.append(response.json()["id"])
            time.sleep(1.5)  # some are running now
            server.stop_server()
            refused = 0
            for _ in range(3):
                started = time.monotonic()
                response = client.post("/v1/jobs", json={"repo": repo})
                assert time.monotonic() - started < 15, "the API hung during the outage"
                if response.status_code == 202:
                    accepted.append(response.json()["id"])
                else:
                    assert response.status_code == 503, response.text
                    assert response.headers["content-type"].startswith("application/problem+json")
                    refused += 1
            ready = client.get("/readyz")
            assert ready.status_code == 503 and "database" in ready.json()["detail"]
            assert refused == 3
            time.sleep(2)
            server.start_server()
            deadline = time.monotonic() + 120
            while True:
                try:
                    response = client.post("/v1/jobs", json={"repo": repo})
                except httpx.HTTPError:
                    response = None
                if response is not None and response.status_code == 202:
                    accepted.append(response.json()["id"])
                    break
                assert time.monotonic() < deadline, "the API did not come back"
                time.sleep(0.5)
            while True:
                statuses = [client.get(f"/v1/jobs/{i}").json()["status"] for i in accepted]
                if all(s not in ("queued", "running") for s in statuses):
                    break
                assert time.monotonic() < deadline, statuses
                time.sleep(0.5)
        assert statuses == ["succeeded"] * len(accepted), statuses
    finally:
        server.stop()


def test_kill_9_a_worker_holding_a_job_on_postgresql(
    pg_cluster: PgCluster, git_server: GitServer
) -> None:
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho begin\nsleep 2\necho end\n"})
    admin = pg_cluster.token("root", "admin")
    first = pg_cluster.start("w1", "worker", REPORUN_LEASE_SECONDS="2")
    with httpx.Client(base_url=pg_cluster.base, headers=admin, timeout=30) as client:
        job_id = client.post("/v1/jobs", json={"repo": repo}).json()["id"]
        deadline = time.monotonic() + 60
        while client.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first.stop(signal.SIGKILL)
        pg_cluster.start("w2", "worker", REPORUN_LEASE_SECONDS="2")
        while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert (job["status"], job["attempts"]) == ("succeeded", 2), job
        assert client.get(f"/v1/jobs/{job_id}/logs").text.count("end") == 1
