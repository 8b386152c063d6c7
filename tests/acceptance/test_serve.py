"""`make run` / `reporun serve`, the CLI, and the seed's curl calls, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from reporun.jobs import TERMINAL
from tests.acceptance.conftest import ROOT, Cluster
from tests.conftest import processes_with
from tests.harness.git import GitServer
from tests.harness.ports import free_port
from tests.harness.processes import Process, Processes, require_tool
from tests.harness.server import cli_env, reporun


def test_make_run_serves_healthz(tmp_path: Path, processes: Processes) -> None:
    require_tool("make", "make run")
    port = free_port()
    env = cli_env(tmp_path / "data", port)
    process = processes.start(
        ["make", "-C", str(ROOT), "run", f"RUN_ARGS=--port {port} --data-dir {tmp_path / 'data'}"],
        env,
        tmp_path / "make-run.log",
    )
    process.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=600)
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
    token = tmp_path / "data" / "admin.token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert process.stop(signal.SIGINT) in (0, 2, 130, -2)
    output = process.log.read_text()
    assert "reporun is serving on" in output and "submit" in output


def test_seed_calls_with_curl(served: dict, git_server: GitServer) -> None:
    curl = require_tool("curl", "the seed's curl calls")
    base = f"http://127.0.0.1:{served['port']}"
    auth = f"Authorization: Bearer {served['token']}"
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\necho seed job\n"})

    def call(path: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [curl, "-s", "-H", auth, "-w", "\n%{http_code}", f"{base}{path}"],
            capture_output=True,
            text=True,
            timeout=30,
        )

    added = call(f"/add?url={repo}")
    body, code = added.stdout.rsplit("\n", 1)
    assert code == "200" and body.startswith("Job added: "), added.stdout
    key = body.removeprefix("Job added: ").strip()
    uuid.UUID(key)
    deadline = time.monotonic() + 60
    while True:
        body, code = call(f"/status?key={key}").stdout.rsplit("\n", 1)
        status = json.loads(body)
        assert code == "200" and status[0]["key"] == key and status[0]["usuario"] == "admin"
        if status[0]["status"] in ("Finished", "Failed"):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status == [{"usuario": "admin", "key": key, "status": "Finished"}]
    body, code = call("/all").stdout.rsplit("\n", 1)
    assert code == "200" and {"usuario": "admin", "key": key, "status": "Finished"} in json.loads(
        body
    )
    health = subprocess.run(
        [curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{base}/healthcheck"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert health.stdout == "200"
    unauthorized = subprocess.run(
        [curl, "-s", "-w", "\n%{http_code}", f"{base}/add?url={repo}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    body, code = unauthorized.stdout.rsplit("\n", 1)
    assert code == "401" and json.loads(body)["status"] == 401


def test_cli_submit_wait_follow_status_logs_cancel(served: dict, git_server: GitServer) -> None:
    env = served["env"]
    good = git_server.make_repo({"run.sh": "#!/bin/sh\necho cli says hi\n"})
    bad = git_server.make_repo({"run.sh": "#!/bin/sh\necho failing\nexit 4\n"})

    ok = reporun("submit", good, "--wait", env=env)
    assert ok.returncode == 0, ok.stderr
    job_id = ok.stdout.split()[0]
    assert "succeeded" in ok.stdout

    failed = reporun("submit", bad, "--wait", "--json", env=env)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["exit_code"] == 4

    followed = reporun("submit", good, "--follow", env=env)
    assert followed.returncode == 0 and "cli says hi" in followed.stdout

    assert "cli says hi" in reporun("logs", job_id, env=env).stdout
    status = reporun("status", job_id, "--json", env=env)
    assert json.loads(status.stdout)["status"] == "succeeded"
    listed = reporun("jobs", "--json", "--all", "--limit", "2", env=env)
    assert len(json.loads(listed.stdout)) == 3

    slow = reporun("submit", good, "--command", "sleep 600", env=env).stdout.strip()
    cancelled = reporun("cancel", slow, env=env)
    assert cancelled.returncode == 0 and "cancel" in cancelled.stdout

    local = reporun("submit", str(ROOT), "--command", "test -f pyproject.toml", "--wait", env=env)
    assert local.returncode == 0, local.stdout + local.stderr


def test_cli_usage_errors_exit_2_with_one_line(served: dict) -> None:
    env = served["env"]
    for args in (
        ["submit"],
        ["submit", "x", "--timeout", "soon"],
        ["submit", "x", "--wait", "--follow"],
        ["submit", "file:///etc", "--env", "novalue"],
        ["nope"],
        ["jobs", "--status", "sleeping"],
        ["status", "not-a-uuid"],
        ["status", str(uuid.uuid4())],
        ["submit", "ext::sh -c id"],
    ):
        result = reporun(*args, env=env)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_cli_without_a_server_says_so(tmp_path: Path) -> None:
    env = cli_env(tmp_path, free_port(), REPORUN_TOKEN="x")
    result = reporun("jobs", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("reporun: cannot reach") and "Traceback" not in result.stderr


def test_kill_9_a_worker_mid_job_runs_it_again_once(
    cluster: Cluster, git_server: GitServer
) -> None:
    marker = f"{uuid.uuid4().int % 10**6 + 1000}"
    repo = git_server.make_repo(
        {"run.sh": f"#!/bin/sh\necho attempt starts\nsleep 0.{marker}\nsleep 2\necho done\n"}
    )
    job_id = cluster.submit(repo)
    first = cluster.worker("w1", REPORUN_LEASE_SECONDS="2")
    cluster.api.wait(job_id, {"running"})
    first.stop(signal.SIGKILL)
    assert processes_with(f"sleep 0.{marker}") == []  # the sandbox died with its worker
    second = cluster.worker("w2", REPORUN_LEASE_SECONDS="2")
    ended = cluster.api.wait(job_id, TERMINAL)
    assert ended["status"] == "succeeded", (ended, second.log.read_text())
    assert ended["attempts"] == 2
    log = cluster.api.log(job_id).decode()
    assert log.count("done") == 1 and log.count("attempt starts") == 1
    time.sleep(1)
    assert cluster.api.job(job_id) == ended  # one terminal record: nothing changes afterwards


def _python() -> list[str]:
    return [sys.executable]


def test_reporun_api_refuses_weak_settings_and_serves_with_minted_tokens(
    tmp_path: Path, processes: Processes
) -> None:
    port = free_port()
    db = f"sqlite:///{tmp_path / 'cluster.db'}"
    env = cli_env(tmp_path, port, REPORUN_DATABASE_URL=db)
    refused = reporun("api", "--port", str(port), env=env)
    assert refused.returncode == 2
    assert "REPORUN_SECRET_KEY" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    env["REPORUN_SECRET_KEY"] = "k" * 8 + os.urandom(16).hex()
    not_migrated = reporun("api", "--port", str(port), env=env)
    assert not_migrated.returncode == 2 and "reporun db upgrade" in not_migrated.stderr
    assert reporun("db", "upgrade", env=env).returncode == 0
    off_loopback = reporun(
        "api", "--host", "0.0.0.0", "--port", str(port), env={**env, "REPORUN_SANDBOX": "none"}
    )
    assert off_loopback.returncode == 2 and "loopback" in off_loopback.stderr
    # Kafka mode needs a broker, and PostgreSQL: one line each, from every part.
    for part in ("api", "worker", "observer"):
        kafka = reporun(part, env={**env, "REPORUN_QUEUE": "kafka"})
        assert kafka.returncode == 2 and "REPORUN_KAFKA_BOOTSTRAP" in kafka.stderr, kafka.stderr
        assert len(kafka.stderr.strip().splitlines()) == 1, kafka.stderr
        on_sqlite = reporun(
            part, env={**env, "REPORUN_QUEUE": "kafka", "REPORUN_KAFKA_BOOTSTRAP": "k:9092"}
        )
        assert on_sqlite.returncode == 2 and "needs PostgreSQL" in on_sqlite.stderr
    server = processes.start(
        [*_python(), "-m", "reporun", "api", "--port", str(port)], env, tmp_path / "api.log"
    )
    server.wait_http(f"http://127.0.0.1:{port}/healthz")
    token = reporun("token", "create", "bob", "--role", "user", env=env).stdout.strip()
    response = httpx.get(
        f"http://127.0.0.1:{port}/v1/jobs", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200 and response.json() == {"items": [], "next_cursor": None}
    assert reporun("token", "create", "x", "--role", "root", env=env).returncode == 2


def test_sigterm_drains_a_worker(cluster: Cluster, git_server: GitServer) -> None:
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\nsleep 2\necho finished\n"})
    first = cluster.submit(repo)
    second = cluster.submit(repo)
    worker = cluster.worker("w")
    cluster.api.wait(first, {"running"})
    assert worker.stop(signal.SIGTERM, timeout=30) == 0, worker.log.read_text()
    assert cluster.api.job(first)["status"] == "succeeded", cluster.api.job(first)
    assert cluster.api.job(second)["status"] == "queued"  # a draining worker takes nothing new


def test_doctor_says_the_sandbox_works(tmp_path: Path) -> None:
    require_tool("bwrap", "the job sandbox")
    env = cli_env(tmp_path / "data", free_port())
    assert reporun("db", "upgrade", env=env).returncode == 0
    result = reporun("doctor", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    sandbox (bubblewrap)" in result.stdout and "FAIL" not in result.stdout
    # A registries job's namespace and proxy, probed: the proxy refused the metadata address.
    assert "ok    network mode registries (its own namespace, the egress proxy)" in result.stdout
    broken = reporun("doctor", env={**env, "PATH": "/nonexistent"})
    assert broken.returncode == 1 and "FAIL  sandbox" in broken.stdout


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_sigterm_to_serve_drains_its_workers_and_leaves_none(
    served: dict, git_server: GitServer
) -> None:
    import sqlite3

    process: Process = served["process"]  # type: ignore[assignment]
    workers = _children(process.popen.pid)
    assert len(workers) == 2
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\nsleep 1\necho drained\n"})
    job_id = json.loads(reporun("submit", repo, "--json", env=served["env"]).stdout)["id"]
    url = f"http://127.0.0.1:{served['port']}/v1/jobs/{job_id}"
    headers = {"Authorization": f"Bearer {served['token']}"}
    deadline = time.monotonic() + 30
    while httpx.get(url, headers=headers, timeout=5).json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.popen.send_signal(signal.SIGTERM)  # the serving process only, not its group
    assert process.popen.wait(30) == 0, process.log.read_text()[-2000:]
    for pid in workers:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )
    with sqlite3.connect(Path(served["data"]) / "reporun.db") as db:  # type: ignore[arg-type]
        status = db.execute(
            "SELECT status FROM jobs WHERE id = ?", (uuid.UUID(job_id).hex,)
        ).fetchone()
    assert status == ("succeeded",)


def test_serve_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = cli_env(tmp_path / "data", port)
        result = reporun("serve", "--port", str(port), "--workers", "0", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"reporun: port {port} is in use: another reporun serve? "
        "(stop it, or choose another with --port)"
    ]
    assert "Traceback" not in result.stderr


def test_cli_one_liners_for_bad_ids_urls_and_tokens(tmp_path: Path) -> None:
    env = cli_env(tmp_path, free_port(), REPORUN_TOKEN="x")
    for args, extra in (
        (["status", "../../healthz"], {}),
        (["logs", "nope"], {}),
        (["cancel", "1234"], {}),
    ):
        result = reporun(*args, env={**env, **extra})
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result
    for extra in ({"REPORUN_URL": "http://[::1"}, {"REPORUN_TOKEN": "tökén"}):
        result = reporun("jobs", env={**env, **extra})
        assert result.returncode in (1, 2) and len(result.stderr.strip().splitlines()) == 1, result
        assert "Traceback" not in result.stderr
    unreachable = reporun(
        "db", "upgrade", env={**env, "REPORUN_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}
    )
    assert unreachable.returncode == 1 and "Traceback" not in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1, unreachable.stderr
