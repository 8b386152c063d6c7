"""Cluster mode with REPORUN_QUEUE=kafka: `reporun api` (with its outbox relay), `reporun worker`
processes in one consumer group and `reporun observer`, on real PostgreSQL and a real
Kafka-protocol broker (Tansu). Every job ends exactly once, whatever is killed or restarted.
Tansu's first join is slow and it has no cooperative rebalancing: nothing here counts
rebalances or looks at error codes."""

from __future__ import annotations

import collections
import concurrent.futures
import json
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.git import GitServer
from tests.harness.kafka import Broker
from tests.harness.processes import Process, Processes, require_tool
from tests.harness.server import Server

# Among the longest files: started first, so the run does not end waiting on it.
pytestmark = pytest.mark.slow

# Tansu makes a group's join wait for the rebalance timeout: keep it short.
KAFKA_ENV = {
    "REPORUN_QUEUE": "kafka",
    "REPORUN_KAFKA_SESSION_TIMEOUT": "3",
    "REPORUN_KAFKA_REBALANCE_TIMEOUT": "1",
    "REPORUN_KAFKA_PARTITIONS": "4",
    "REPORUN_LEASE_SECONDS": "3",
    "REPORUN_LOG_FORMAT": "json",
    "REPORUN_LOG_LEVEL": "INFO",
    "REPORUN_QUOTA_PER_MINUTE": "0",
    "REPORUN_ALLOWED_SCHEMES": "https,git",
    "REPORUN_TRUSTED_HOSTS": "127.0.0.1",
}
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled", "error"}


class KafkaCluster:
    def __init__(
        self, tmp_path: Path, processes: Processes, database_url: str, broker: Broker
    ) -> None:
        require_tool("bwrap", "the job sandbox")
        self.tmp_path = tmp_path
        self.broker = broker
        self.server = Server(
            processes,
            tmp_path / "data",
            REPORUN_DATABASE_URL=database_url,
            REPORUN_SECRET_KEY=secrets.token_urlsafe(32),
            REPORUN_KAFKA_BOOTSTRAP=broker.bootstrap,
            **KAFKA_ENV,
        )
        self.server.upgrade()
        self.server.api(tmp_path / "api.log", ready="/readyz")
        self.admin = {"Authorization": f"Bearer {self.server.mint('root', 'admin')}"}
        self.http = httpx.Client(base_url=self.server.url, headers=self.admin, timeout=30)
        self.workers: dict[str, Process] = {}

    def worker(self, name: str, **env: str) -> Process:
        process = self.server.start(
            self.tmp_path / f"{name}.log", "worker", REPORUN_WORKER_ID=name, **env
        )
        self.workers[name] = process
        return process

    def submit(self, repo: str, headers: dict[str, str] | None = None, **fields: Any) -> str:
        response = self.http.post("/v1/jobs", json={"repo": repo, **fields}, headers=headers)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.http.get(f"/v1/jobs/{job_id}").json())

    def all_jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = self.http.get("/v1/jobs", params=params).json()
            jobs += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return jobs

    def until(self, what: str, check: Callable[[], object], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                logs = {name: p.tail(1500) for name, p in self.workers.items()}
                pytest.fail(f"{what} within {timeout} s; workers' logs: {logs}")
            time.sleep(0.2)

    def all_ended(self, ids: list[str], timeout: float = 120) -> list[dict[str, Any]]:
        def ended() -> bool:
            return all(self.job(i)["status"] in TERMINAL for i in ids)

        self.until(f"{len(ids)} jobs ended", ended, timeout)
        return [self.job(i) for i in ids]

    def claims(self) -> collections.Counter[str]:
        """How many times each job was claimed, by every worker's log."""
        counted: collections.Counter[str] = collections.Counter()
        for process in self.workers.values():
            for line in process.log.read_text(errors="replace").splitlines():
                entry = _json(line)
                if entry.get("action") == "claim" and "job_id" in entry:
                    counted[entry["job_id"]] += 1
        return counted


def _json(line: str) -> dict[str, Any]:
    try:
        found = json.loads(line)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


@pytest.fixture
def kafka_cluster(
    tmp_path: Path, processes: Processes, postgres_url: str, kafka: Broker
) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster(tmp_path, processes, postgres_url.replace("+asyncpg", ""), kafka)
    yield cluster
    cluster.http.close()


def test_200_jobs_from_4_submitters_end_exactly_once_on_2_workers(
    kafka_cluster: KafkaCluster, git_server: GitServer
) -> None:
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho ran\n"})
    for name in ("worker-a", "worker-b"):
        kafka_cluster.worker(name)
    submitters = [
        {"Authorization": f"Bearer {kafka_cluster.server.mint(f'user{n}')}"} for n in range(4)
    ]

    def submit_all(headers: dict[str, str]) -> list[str]:
        return [kafka_cluster.submit(repo, headers, command="echo ran") for _ in range(50)]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        submitted = [i for ids in pool.map(submit_all, submitters) for i in ids]
    assert len(set(submitted)) == 200
    kafka_cluster.until(
        "every job ended",
        lambda: not [j for j in kafka_cluster.all_jobs() if j["status"] not in TERMINAL],
        240,
    )
    jobs = kafka_cluster.all_jobs()
    assert sorted(j["id"] for j in jobs) == sorted(submitted)
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert {j["attempts"] for j in jobs} == {1}
    assert {j["worker"] for j in jobs} == {"worker-a", "worker-b"}
    claims = kafka_cluster.claims()
    assert set(claims) == set(submitted) and set(claims.values()) == {1}
    kafka_cluster.until(
        "the outbox published",
        lambda: "reporun_outbox_unpublished 0.0" in kafka_cluster.http.get("/metrics").text,
        30,
    )
    assert 'reporun_kafka_consumer_lag{partition="0"}' in kafka_cluster.http.get("/metrics").text
    ready = kafka_cluster.http.get("/readyz").json()
    assert ready["checks"] == {"database": "ok", "kafka": "ok"}


def test_a_worker_killed_mid_job_the_job_runs_again_after_its_lease_and_ends_once(
    kafka_cluster: KafkaCluster, git_server: GitServer
) -> None:
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho started\nsleep 3\necho done\n"})
    first = kafka_cluster.worker("worker-a")
    job_id = kafka_cluster.submit(repo)
    kafka_cluster.until("the job runs", lambda: kafka_cluster.job(job_id)["status"] == "running")
    kafka_cluster.worker("worker-b")
    first.stop(signal.SIGKILL)
    (ended,) = kafka_cluster.all_ended([job_id], 60)
    assert (ended["status"], ended["attempts"], ended["worker"]) == ("succeeded", 2, "worker-b")
    assert kafka_cluster.claims()[job_id] == 2  # once each: the lost run and the one that ended


def test_a_job_longer_than_max_poll_interval_runs_once_and_its_worker_stays(
    kafka_cluster: KafkaCluster, git_server: GitServer
) -> None:
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\nsleep 6\necho long\n"})
    short = git_server.make_repo({"run.sh": "#!/bin/sh\necho short\n"})
    lowered = {"REPORUN_KAFKA_MAX_POLL_INTERVAL": "3"}
    first = kafka_cluster.worker("worker-a", **lowered)
    long_job = kafka_cluster.submit(repo)
    kafka_cluster.until("the job runs", lambda: kafka_cluster.job(long_job)["status"] == "running")
    kafka_cluster.worker("worker-b", **lowered)  # joins mid-job: a rebalance
    others = [kafka_cluster.submit(short) for _ in range(4)]
    (ended,) = kafka_cluster.all_ended([long_job], 60)
    assert (ended["status"], ended["attempts"], ended["worker"]) == ("succeeded", 1, "worker-a")
    kafka_cluster.all_ended(others, 60)
    assert kafka_cluster.claims()[long_job] == 1
    log = first.log.read_text(errors="replace")
    # aiokafka's words when a consumer overstays max_poll_interval_ms and leaves its group.
    assert "poll timeout has expired" not in log.lower()
    assert "max_poll_interval" not in log


def test_jobs_behind_a_busy_worker_start_on_an_idle_one_within_seconds(
    kafka_cluster: KafkaCluster, git_server: GitServer
) -> None:
    slow = git_server.make_repo({"run.sh": "#!/bin/sh\nsleep 20\n"})
    quick = git_server.make_repo({"run.sh": "#!/bin/sh\necho quick\n"})
    kafka_cluster.worker("worker-a")
    kafka_cluster.worker("worker-b")
    busy = kafka_cluster.submit(slow)
    kafka_cluster.until("the slow job runs", lambda: kafka_cluster.job(busy)["status"] == "running")
    # Eight jobs: without the hand-off, those on the busy worker's partitions wait 20 s.
    ids = [kafka_cluster.submit(quick) for _ in range(8)]
    ended = kafka_cluster.all_ended(ids, 30)
    assert kafka_cluster.job(busy)["status"] == "running"
    waits = sorted(j["wait_seconds"] for j in ended)
    assert waits[-1] < 6, waits
    assert {j["worker"] for j in ended} != {kafka_cluster.job(busy)["worker"]}


def test_a_broker_restart_while_jobs_flow_loses_and_doubles_nothing(
    kafka_cluster: KafkaCluster, git_server: GitServer
) -> None:
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\nsleep 0.3\necho ok\n"})
    kafka_cluster.worker("worker-a")
    kafka_cluster.worker("worker-b")
    ids = [kafka_cluster.submit(repo) for _ in range(10)]
    kafka_cluster.broker.kill()
    # The API stays in service and accepts jobs; they wait in the outbox (and run anyway).
    ready = kafka_cluster.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["kafka"].startswith("degraded: Kafka at"), ready.text
    ids += [kafka_cluster.submit(repo) for _ in range(5)]
    time.sleep(1)
    kafka_cluster.broker.start()  # back empty: no topics, no offsets
    ids += [kafka_cluster.submit(repo) for _ in range(10)]
    time.sleep(2)
    ids += [kafka_cluster.submit(repo) for _ in range(10)]
    ended = kafka_cluster.all_ended(ids, 120)
    assert {j["status"] for j in ended} == {"succeeded"}
    assert {j["attempts"] for j in ended} == {1}
    claims = kafka_cluster.claims()
    assert all(claims[i] == 1 for i in ids), claims
    # The relay and the workers came back to the new broker by themselves.
    kafka_cluster.until(
        "the outbox published",
        lambda: "reporun_outbox_unpublished 0.0" in kafka_cluster.http.get("/metrics").text,
        30,
    )
    after = kafka_cluster.submit(repo)
    assert kafka_cluster.all_ended([after], 30)[0]["status"] == "succeeded"
    # With the broker gone for good, a worker still stops when told to.
    kafka_cluster.broker.kill()
    time.sleep(1)
    assert kafka_cluster.workers["worker-a"].stop(signal.SIGTERM, timeout=20) == 0


def test_the_observer_scales_out_on_waits_read_from_results_and_back_in(
    tmp_path: Path, kafka_cluster: KafkaCluster, git_server: GitServer
) -> None:
    elastic = {
        "REPORUN_TARGET_WAIT": "1",
        "REPORUN_SCALE_IN_COOLDOWN": "3",
        "REPORUN_OBSERVE_WINDOW": "10",
        "REPORUN_OBSERVE_INTERVAL": "0.5",
    }
    observer = kafka_cluster.server.start(
        tmp_path / "observer.log",
        "observer",
        "--min-workers",
        "1",
        "--max-workers",
        "3",
        **elastic,
    )

    def workers() -> int:
        return len(kafka_cluster.http.get("/v1/workers").json()["items"])

    kafka_cluster.until("one worker", lambda: workers() == 1, 30)
    kafka_cluster.until(
        "the observer reads results",
        lambda: '"reading results"' in observer.log.read_text(errors="replace"),
        30,
    )
    quick = git_server.make_repo({"run.sh": "#!/bin/sh\necho quick\n"})
    # A job first: its result is in the observer's window when the burst comes.
    kafka_cluster.all_ended([kafka_cluster.submit(quick)], 30)
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\nsleep 1.5\n"})
    ids = [kafka_cluster.submit(repo) for _ in range(10)]
    most = 0

    def ended() -> bool:
        nonlocal most
        most = max(most, workers())
        return all(kafka_cluster.job(i)["status"] in TERMINAL for i in ids)

    kafka_cluster.until("the burst ended", ended, 90)
    assert most >= 2
    kafka_cluster.until("back to one worker", lambda: workers() == 1, 30)
    decisions = kafka_cluster.http.get("/v1/scaling").json()["decisions"]
    assert {"out", "in"} <= {d["direction"] for d in decisions}
    # It scaled out on waits it read from the results topic.
    entries = [_json(line) for line in observer.log.read_text(errors="replace").splitlines()]
    outs = [e for e in entries if e.get("action") == "scale_out"]
    assert any(e.get("source") == "results" and e.get("waits") for e in outs), outs
    assert observer.stop(signal.SIGTERM, timeout=30) == 0
