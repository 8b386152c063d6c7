"""`reporun serve --min-workers 1 --max-workers N`: the observer grows the pool when jobs wait,
shrinks it when they stop, and never kills or retries a job doing so."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reporun.jobs import TERMINAL
from tests.acceptance.conftest import Cluster
from tests.harness.git import GitServer
from tests.harness.processes import Processes, require_tool
from tests.harness.server import Server, reporun

# Among the longest files: started first, so the run does not end waiting on it.
pytestmark = pytest.mark.slow

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
    def __init__(self, tmp_path: Path, processes: Processes, low: int, high: int) -> None:
        require_tool("bwrap", "the job sandbox")
        server = Server(processes, tmp_path / "data", **ELASTIC_ENV)
        server.serve(tmp_path / "serve.log", "--min-workers", str(low), "--max-workers", str(high))
        self.env = server.env
        assert server.process is not None
        self.process = server.process
        self.api = server.blocking_client(timeout=10)

    def workers(self) -> list[dict[str, Any]]:
        return list(self.api.get("/v1/workers").json()["items"])

    def scaling(self) -> dict[str, Any]:
        return dict(self.api.get("/v1/scaling").json())

    def until(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                pytest.fail(f"{what} within {timeout} s; log:\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def log(self) -> str:
        return self.process.log.read_text(errors="replace")


@pytest.fixture
def elastic(tmp_path: Path, processes: Processes) -> Iterator[Callable[[int, int], Elastic]]:
    pools: list[Elastic] = []

    def start(low: int, high: int) -> Elastic:
        pools.append(Elastic(tmp_path, processes, low, high))
        return pools[-1]

    yield start
    for pool in pools:
        pool.api.close()


def test_a_burst_grows_the_pool_drains_and_shrinks_back(
    elastic: Callable[[int, int], Elastic], git_server: GitServer
) -> None:
    pool = elastic(1, 4)
    pool.until("one worker at the start", lambda: len(pool.workers()) == 1, 30)
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\nsleep 1.5\necho done\n"})
    ids = [pool.api.submit(repo, command="./run.sh")["id"] for _ in range(24)]

    most = 0

    def drained() -> bool:
        nonlocal most
        most = max(most, len(pool.workers()))
        return all(pool.api.job(i)["status"] in TERMINAL for i in ids)

    pool.until("the burst drained", drained, 120)
    jobs = [pool.api.job(i) for i in ids]
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
    metrics = pool.api.get("/metrics").text
    assert "reporun_workers_desired 1.0" in metrics
    assert 'reporun_scaling_decisions_total{direction="in"}' in metrics


def test_scale_in_never_takes_the_worker_running_a_long_job(
    elastic: Callable[[int, int], Elastic], git_server: GitServer
) -> None:
    pool = elastic(1, 3)
    repo = git_server.make_repo({"run.sh": '#!/bin/sh\nsleep "$1"\n'})
    long = pool.api.submit(repo, command="./run.sh 20")["id"]
    pool.until("the long job started", lambda: pool.api.job(long)["status"] == "running", 30)
    short = [pool.api.submit(repo, command="./run.sh 1.5")["id"] for _ in range(6)]
    pool.until("more workers", lambda: len(pool.workers()) >= 2, 30)
    pool.until(
        "the short jobs ended",
        lambda: all(pool.api.job(i)["status"] == "succeeded" for i in short),
        60,
    )
    holder = pool.api.job(long)["worker"]
    # Scale-in leaves only the worker running the long job; the long job runs to its end.
    pool.until("one worker left", lambda: len(pool.workers()) == 1, 30)
    assert pool.api.job(long)["status"] == "running"
    assert [w["id"] for w in pool.workers()] == [holder]
    pool.until("the long job ended", lambda: pool.api.job(long)["status"] != "running", 30)
    ended = pool.api.job(long)
    assert ended["status"] == "succeeded" and ended["attempts"] == 1, ended
    assert ended["run_seconds"] >= 20
    assert any(d["direction"] == "in" for d in pool.scaling()["decisions"])
    assert reporun("workers", env=pool.env).returncode == 0
    shown = reporun("scaling", env=pool.env)
    assert shown.returncode == 0 and "workers: 1 alive" in shown.stdout, shown.stderr


def test_reporun_observer_scales_workers_of_a_separate_api(
    tmp_path: Path, cluster: Cluster, git_server: GitServer
) -> None:
    """Cluster mode: `reporun observer` (local scaler) beside an API that runs no workers."""
    env = {
        **ELASTIC_ENV,
        "REPORUN_DATABASE_URL": f"sqlite:///{cluster.data / 'reporun.db'}",
        "REPORUN_ALLOWED_SCHEMES": "https,git",
        "REPORUN_TRUSTED_HOSTS": "127.0.0.1",
        "REPORUN_POLL_INTERVAL": "0.05",
    }
    observer = cluster.server.start(
        tmp_path / "observer.log", "observer", "--min-workers", "1", "--max-workers", "3", **env
    )

    def workers() -> int:
        return len(cluster.api.get("/v1/workers").json()["items"])

    deadline = time.monotonic() + 30
    while workers() != 1:
        assert time.monotonic() < deadline, observer.log.read_text()[-2000:]
        time.sleep(0.2)
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\nsleep 1.5\n"})
    # A burst over HTTP: a CLI process per job would be slower than the jobs on a busy host.
    ids = [cluster.api.submit(repo)["id"] for _ in range(10)]
    most = 0
    for job_id in ids:
        most = max(most, workers())
        cluster.api.wait(job_id, {"succeeded"}, timeout=60)
    assert most >= 2
    directions = {d["direction"] for d in cluster.api.get("/v1/scaling").json()["decisions"]}
    assert "out" in directions
    # SIGTERM: the observer drains its workers and leaves none behind.
    pids = [w["pid"] for w in cluster.api.get("/v1/workers").json()["items"]]
    assert pids
    assert observer.stop(signal.SIGTERM, timeout=30) == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), pid
    assert "job_finished" in observer.log.read_text()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
