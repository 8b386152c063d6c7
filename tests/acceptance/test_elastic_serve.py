"""`reporun serve --min-workers 1 --max-workers N`: the observer grows the pool when jobs wait,
shrinks it when they stop, and never kills or retries a job doing so."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import Cluster, Process, cli_env, reporun
from tests.conftest import GitServer, free_port, require_tool

# Fast enough to test: a 1 s target, 3 s of calm before scaling in, a 3 s wait window.
ELASTIC_ENV = {
    "REPORUN_TARGET_WAIT": "1",
    "REPORUN_SCALE_IN_COOLDOWN": "3",
    "REPORUN_OBSERVE_WINDOW": "3",
    "REPORUN_OBSERVE_INTERVAL": "0.5",
    "REPORUN_QUOTA_PER_MINUTE": "0",
    "REPORUN_LOG_LEVEL": "INFO",
}


class Elastic:
    def __init__(self, tmp_path: Path, processes: list[Process], low: int, high: int) -> None:
        require_tool("bwrap", "the job sandbox")
        self.port = free_port()
        self.data = tmp_path / "data"
        self.env = cli_env(self.data, self.port, **ELASTIC_ENV)
        self.process = Process(
            [
                sys.executable,
                "-m",
                "reporun",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data),
                "--min-workers",
                str(low),
                "--max-workers",
                str(high),
            ],
            self.env,
            tmp_path / "serve.log",
        )
        processes.append(self.process)
        self.base = f"http://127.0.0.1:{self.port}"
        self.process.wait_http(f"{self.base}/healthz")
        token = (self.data / "admin.token").read_text().strip()
        self.http = httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    def submit(self, repo: str, command: str) -> str:
        response = self.http.post("/v1/jobs", json={"repo": repo, "command": command})
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.http.get(f"/v1/jobs/{job_id}").json())

    def workers(self) -> list[dict[str, Any]]:
        return list(self.http.get("/v1/workers").json()["items"])

    def scaling(self) -> dict[str, Any]:
        return dict(self.http.get("/v1/scaling").json())

    def until(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                pytest.fail(f"{what} within {timeout} s; log:\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def log(self) -> str:
        return self.process.log.read_text(errors="replace")


@pytest.fixture
def elastic(tmp_path: Path, processes: list[Process]) -> Iterator[Callable[[int, int], Elastic]]:
    pools: list[Elastic] = []

    def start(low: int, high: int) -> Elastic:
        pools.append(Elastic(tmp_path, processes, low, high))
        return pools[-1]

    yield start
    for pool in pools:
        pool.http.close()


def test_a_burst_grows_the_pool_drains_and_shrinks_back(
    elastic: Callable[[int, int], Elastic], git_server: GitServer
) -> None:
    pool = elastic(1, 4)
    pool.until("one worker at the start", lambda: len(pool.workers()) == 1, 30)
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\nsleep 1.5\necho done\n"})
    ids = [pool.submit(repo, "./run.sh") for _ in range(24)]

    most = 0

    def drained() -> bool:
        nonlocal most
        most = max(most, len(pool.workers()))
        return all(pool.job(i)["status"] in ("succeeded", "failed", "error") for i in ids)

    pool.until("the burst drained", drained, 120)
    jobs = [pool.job(i) for i in ids]
    assert {j["status"] for j in jobs} == {"succeeded"}, [j["reason"] for j in jobs]
    assert {j["attempts"] for j in jobs} == {1}  # nothing was killed and run again
    assert most >= 3, most
    assert len({j["worker"] for j in jobs}) >= 3

    pool.until("back to one worker", lambda: len(pool.workers()) == 1, 60)
    report = pool.scaling()
    directions = [d["direction"] for d in report["decisions"]]
    assert "out" in directions and directions[0] == "in", report
    assert report["desired"] == 1
    grew = next(d for d in report["decisions"] if d["direction"] == "out" and d["actual"] >= 1)
    assert grew["inputs"]["queued"] > 0 and grew["inputs"]["signal"] > 1.0
    assert all(d["desired"] <= 4 for d in report["decisions"])

    # The observer's log shows the seed's figures for each finished job (a few seconds after
    # it ended, once its transaction surely committed).
    def logged() -> list[str]:
        return [x for x in pool.log().splitlines() if "action=job_finished" in x]

    pool.until("every finished job logged", lambda: len(logged()) >= len(ids), 30)
    for job_id in ids:
        line = next(x for x in logged() if f"job_id={job_id}" in x)
        assert "posted_at=" in line and "wait_seconds=" in line and "run_seconds=" in line
    metrics = pool.http.get("/metrics").text
    assert "reporun_workers_desired 1.0" in metrics
    assert 'reporun_scaling_decisions_total{direction="in"}' in metrics


def test_scale_in_never_takes_the_worker_running_a_long_job(
    elastic: Callable[[int, int], Elastic], git_server: GitServer
) -> None:
    pool = elastic(1, 3)
    repo = git_server.make_repo({"run.sh": '#!/bin/sh\nsleep "$1"\n'})
    long = pool.submit(repo, "./run.sh 20")
    pool.until("the long job started", lambda: pool.job(long)["status"] == "running", 30)
    short = [pool.submit(repo, "./run.sh 1.5") for _ in range(6)]
    pool.until("more workers", lambda: len(pool.workers()) >= 2, 30)
    pool.until(
        "the short jobs ended",
        lambda: all(pool.job(i)["status"] == "succeeded" for i in short),
        60,
    )
    holder = pool.job(long)["worker"]
    # Scale-in leaves only the worker running the long job; the long job runs to its end.
    pool.until("one worker left", lambda: len(pool.workers()) == 1, 30)
    assert pool.job(long)["status"] == "running"
    assert [w["id"] for w in pool.workers()] == [holder]
    pool.until("the long job ended", lambda: pool.job(long)["status"] != "running", 30)
    ended = pool.job(long)
    assert ended["status"] == "succeeded" and ended["attempts"] == 1, ended
    assert ended["run_seconds"] >= 20
    assert any(d["direction"] == "in" for d in pool.scaling()["decisions"])
    assert reporun("workers", env=pool.env).returncode == 0
    shown = reporun("scaling", env=pool.env)
    assert shown.returncode == 0 and "workers: 1 alive" in shown.stdout, shown.stderr


def test_reporun_observer_scales_workers_of_a_separate_api(
    tmp_path: Path, processes: list[Process], git_server: GitServer
) -> None:
    """Cluster mode: `reporun observer` (local scaler) beside an API that runs no workers."""
    cluster = Cluster(tmp_path, processes)
    env = {
        **cluster.env,
        **ELASTIC_ENV,
        "REPORUN_DATABASE_URL": f"sqlite:///{cluster.data / 'reporun.db'}",
        "REPORUN_ALLOWED_SCHEMES": "https,git",
        "REPORUN_TRUSTED_HOSTS": "127.0.0.1",
        "REPORUN_POLL_INTERVAL": "0.05",
    }
    observer = Process(
        [sys.executable, "-m", "reporun", "observer", "--min-workers", "1", "--max-workers", "3"],
        env,
        tmp_path / "observer.log",
    )
    processes.append(observer)
    http = httpx.Client(base_url=f"http://127.0.0.1:{cluster.port}", headers=cluster.headers)
    try:

        def workers() -> int:
            return len(http.get("/v1/workers").json()["items"])

        deadline = time.monotonic() + 30
        while workers() != 1:
            assert time.monotonic() < deadline, observer.log.read_text()[-2000:]
            time.sleep(0.2)
        repo = git_server.make_repo({"run.sh": "#!/bin/sh\nsleep 1.5\n"})
        # A burst over HTTP: a CLI process per job would be slower than the jobs on a busy host.
        ids = [http.post("/v1/jobs", json={"repo": repo}).json()["id"] for _ in range(10)]
        most = 0
        for job_id in ids:
            most = max(most, workers())
            cluster.wait_status(job_id, {"succeeded"}, timeout=60)
        assert most >= 2
        directions = {d["direction"] for d in http.get("/v1/scaling").json()["decisions"]}
        assert "out" in directions
        # SIGTERM: the observer drains its workers and leaves none behind.
        pids = [w["pid"] for w in http.get("/v1/workers").json()["items"]]
        assert pids
        assert observer.stop(signal.SIGTERM, timeout=30) == 0
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid), pid
        assert "job_finished" in observer.log.read_text()
    finally:
        http.close()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
