"""`reporun serve` starting and stopping as an operator does it: Ctrl-C (once, twice), SIGTERM,
a second serve on a busy port, a worker that crashes."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import processes_with
from tests.harness.git import GitServer
from tests.harness.processes import Process, Processes, require_tool
from tests.harness.server import Server, reporun

# Among the longest files: started first, so the run does not end waiting on it.
pytestmark = pytest.mark.slow

# Long enough that only a second signal (never the grace) ends an interrupted run.
GRACE = "30"
WAITING = f"waiting up to {GRACE} s for job {{}} to finish ("


def _descendants(pid: int) -> set[int]:
    """Every live process under `pid` (workers, git, bwrap and what runs in the sandbox)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _in_sessions(sessions: set[int]) -> list[str]:
    """Live processes in any of these sessions (a worker leads one, a sandbox another)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) in sessions:
            found.append(f"{entry.name}: {cmdline}")
    return found


def _session(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except OSError:
        return None


def _until(what: str, check: Callable[[], bool], process: Process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s; serve's output:\n{process.tail()}")
        time.sleep(0.05)


def _stored(data: Path, job_id: str) -> tuple[str, int, str | None]:
    """Status, attempts and reason as the database keeps them (the server is down)."""
    with sqlite3.connect(data / "reporun.db") as db:
        row = db.execute(
            "SELECT status, attempts, reason FROM jobs WHERE id = ?", (uuid.UUID(job_id).hex,)
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


class Round:
    """One `reporun serve` on the test's data dir, with one worker."""

    def __init__(self, tmp_path: Path, processes: Processes, n: int, port: int | None) -> None:
        self.server = Server(processes, tmp_path / "data", REPORUN_DRAIN_GRACE=GRACE)
        if port is not None:
            self.server.port = port
            self.server.env["REPORUN_URL"] = self.server.url
        self.server.serve(tmp_path / f"serve-{n}.log", "--workers", "1")
        assert self.server.process is not None
        self.process = self.server.process
        self.api = self.server.blocking_client(timeout=10)

    def output(self) -> str:
        return self.process.log.read_text(errors="replace")

    def running(self, job_id: str, marker: str) -> set[int]:
        """Once the job runs in its sandbox: every process of the server but itself."""
        _until("the job runs", lambda: processes_with(marker) != [], self.process)
        tree = _descendants(self.process.popen.pid)
        assert any("bwrap" in Path(f"/proc/{p}/cmdline").read_text() for p in tree if _alive(p))
        self.api.close()
        return tree

    def exited(self, tree: set[int], marker: str, timeout: float = 30) -> int:
        code = self.process.popen.wait(timeout)
        sessions = {s for s in map(_session, tree) if s is not None}
        # Nothing of the server outlives the command: no worker, no sandbox, no job process.
        assert [p for p in tree if _alive(p)] == [], self.output()
        assert _in_sessions(sessions - {os.getsid(0)}) == []
        assert processes_with(marker) == []
        return code


def test_ctrl_c_twice_and_sigterm_give_the_job_back_without_using_an_attempt(
    tmp_path: Path, processes: Processes, git_server: GitServer
) -> None:
    require_tool("bwrap", "the job sandbox")
    marker = f"{uuid.uuid4().int % 10**6 + 1000}"
    repo = git_server.make_repo(
        {"run.sh": f"#!/bin/sh\necho run starts\nsleep 5.{marker}\necho done\n"}
    )
    first = Round(tmp_path, processes, 1, None)
    port = first.server.port
    job_id = first.api.submit(repo)["id"]

    # 1. Ctrl-C (to the whole process group, as a terminal sends it): the waiting line, then a
    # second Ctrl-C stops at once.
    tree = first.running(job_id, marker)
    first.process.send(signal.SIGINT)
    _until("the waiting line", lambda: WAITING.format(job_id) in first.output(), first.process)
    assert "Ctrl-C again to stop now" in first.output()
    first.process.send(signal.SIGINT)
    assert first.exited(tree, marker) == 0, first.output()
    assert _stored(tmp_path / "data", job_id)[:2] == ("queued", 0)

    # 2. The worker does not answer (stopped): the second Ctrl-C kills it and its sandbox, and
    # the job still goes back without using an attempt (the next start's reaper has nothing).
    second = Round(tmp_path, processes, 2, port)
    tree = second.running(job_id, marker)
    [worker] = _children(second.process.popen.pid)
    os.kill(worker, signal.SIGSTOP)
    second.process.send(signal.SIGINT)
    _until("the waiting line", lambda: WAITING.format(job_id) in second.output(), second.process)
    second.process.send(signal.SIGINT)
    assert second.exited(tree, marker) == 0, second.output()
    assert _stored(tmp_path / "data", job_id)[:2] == ("queued", 0)

    # 3. SIGTERM twice, to the serving process alone (a service manager's stop).
    third = Round(tmp_path, processes, 3, port)
    tree = third.running(job_id, marker)
    third.process.popen.send_signal(signal.SIGTERM)
    _until("the waiting line", lambda: WAITING.format(job_id) in third.output(), third.process)
    third.process.popen.send_signal(signal.SIGTERM)
    assert third.exited(tree, marker) == 0, third.output()
    assert _stored(tmp_path / "data", job_id)[:2] == ("queued", 0)

    # 4. One Ctrl-C: serve waits for the job, which ends well, on its first attempt.
    fourth = Round(tmp_path, processes, 4, port)
    tree = fourth.running(job_id, marker)
    fourth.process.send(signal.SIGINT)
    assert fourth.exited(tree, marker, timeout=60) == 0, fourth.output()
    assert WAITING.format(job_id) in fourth.output()
    assert _stored(tmp_path / "data", job_id) == ("succeeded", 1, None), fourth.output()
    fifth = Round(tmp_path, processes, 5, port)
    log = fifth.api.log(job_id).decode()
    fifth.api.close()
    assert log.count("run starts") == 1 and log.count("done") == 1, log
    assert fifth.process.stop(signal.SIGINT) == 0, fifth.output()


def test_kill_9_of_a_serve_worker_costs_an_attempt(
    tmp_path: Path, processes: Processes, git_server: GitServer
) -> None:
    require_tool("bwrap", "the job sandbox")
    marker = f"{uuid.uuid4().int % 10**6 + 1000}"
    repo = git_server.make_repo({"run.sh": f"#!/bin/sh\nsleep 2.{marker}\necho done\n"})
    server = Server(processes, tmp_path / "data", REPORUN_LEASE_SECONDS="2")
    server.serve(tmp_path / "serve.log", "--workers", "1")
    assert server.process is not None
    api = server.blocking_client(timeout=10)
    try:
        job_id = api.submit(repo)["id"]
        _until("the job runs", lambda: processes_with(marker) != [], server.process)
        [worker] = _children(server.process.popen.pid)
        os.kill(worker, signal.SIGKILL)
        ended = api.wait(job_id, timeout=60)
        assert ended["status"] == "succeeded" and ended["attempts"] == 2, ended
    finally:
        api.close()


def test_a_second_serve_on_a_busy_port_exits_2_and_changes_nothing(
    tmp_path: Path, processes: Processes
) -> None:
    require_tool("bwrap", "the job sandbox")
    first = Server(processes, tmp_path / "data").serve(tmp_path / "serve.log")
    assert first.process is not None
    api = first.blocking_client(timeout=10)
    try:
        workers = _descendants(first.process.popen.pid)
        _until(
            "two workers", lambda: len(api.get("/v1/workers").json()["items"]) == 2, first.process
        )
        before = (api.get("/v1/workers").json(), api.get("/v1/scaling").json())
        for data in (first.data_dir, tmp_path / "other"):
            second = reporun(
                "serve", "--port", str(first.port), "--data-dir", str(data), env=first.env
            )
            assert second.returncode == 2, second.stderr
            assert second.stderr.splitlines() == [
                f"reporun: port {first.port} is in use: another reporun serve? "
                f"(stop it, or choose another with --port)"
            ]
        assert not (tmp_path / "other").exists()  # nothing written before the port check
        time.sleep(1)  # room for anything the second one might have started
        assert _descendants(first.process.popen.pid) == workers
        after = (api.get("/v1/workers").json(), api.get("/v1/scaling").json())
        for old, new in zip(before, after, strict=True):
            for item in (*old.get("items", []), *new.get("items", [])):
                item.pop("heartbeat_at", None)
                item.pop("last_heartbeat", None)
        assert after == before
        assert after[1]["actual"] == 2 and after[1]["desired"] == 2
    finally:
        api.close()
