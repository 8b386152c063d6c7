"""The CLI and the server as subprocesses, as a user runs them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, require_tool

ROOT = Path(__file__).resolve().parents[2]


def cli_env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPORUN_")}
    env.update(
        REPORUN_DATA_DIR=str(data_dir),
        REPORUN_URL=f"http://127.0.0.1:{port}",
        REPORUN_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def reporun(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reporun", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


class Process:
    """A long-running subprocess, always stopped at the end of the test."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.handle = log.open("wb")
        self.popen = subprocess.Popen(
            argv, env=env, stdout=self.handle, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_http(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                pytest.fail(f"exited {self.popen.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"{url} did not answer:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            with_group = sig != signal.SIGKILL
            try:
                if with_group:
                    os.killpg(self.popen.pid, sig)
                else:
                    self.popen.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.handle.close()
        return int(self.popen.returncode)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        if process.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.popen.pid, signal.SIGKILL)
            process.popen.wait()
        process.handle.close()


@pytest.fixture
def served(tmp_path: Path, processes: list[Process]) -> dict[str, object]:
    """`reporun serve` with two workers on a free port."""
    require_tool("bwrap", "the job sandbox")
    port = free_port()
    data = tmp_path / "data"
    env = cli_env(data, port)
    process = Process(
        [sys.executable, "-m", "reporun", "serve", "--port", str(port), "--data-dir", str(data)],
        env,
        tmp_path / "serve.log",
    )
    processes.append(process)
    process.wait_http(f"http://127.0.0.1:{port}/healthz")
    token = (data / "admin.token").read_text().strip()
    return {"port": port, "data": data, "env": env, "token": token, "process": process}


class Cluster:
    """`reporun serve --workers 0` as the API, with `reporun worker` processes started apart."""

    def __init__(self, tmp_path: Path, processes: list[Process]) -> None:
        require_tool("bwrap", "the job sandbox")
        self.tmp_path = tmp_path
        self.processes = processes
        self.port = free_port()
        self.data = tmp_path / "data"
        self.env = cli_env(self.data, self.port)
        api = Process(
            [sys.executable, "-m", "reporun", "serve", "--workers", "0", "--port", str(self.port)],
            self.env,
            tmp_path / "serve.log",
        )
        processes.append(api)
        api.wait_http(f"http://127.0.0.1:{self.port}/healthz")
        self.headers = {
            "Authorization": f"Bearer {(self.data / 'admin.token').read_text().strip()}"
        }

    def worker(self, name: str, **env: str) -> Process:
        worker_env = {
            **self.env,
            "REPORUN_DATABASE_URL": f"sqlite:///{self.data / 'reporun.db'}",
            "REPORUN_ALLOWED_SCHEMES": "https,git",
            "REPORUN_TRUSTED_HOSTS": "127.0.0.1",
            "REPORUN_POLL_INTERVAL": "0.05",
            **env,
        }
        process = Process(
            [sys.executable, "-m", "reporun", "worker"], worker_env, self.tmp_path / f"{name}.log"
        )
        self.processes.append(process)
        return process

    def job(self, job_id: str) -> dict[str, object]:
        url = f"http://127.0.0.1:{self.port}/v1/jobs/{job_id}"
        return dict(httpx.get(url, headers=self.headers, timeout=5).json())

    def log(self, job_id: str) -> str:
        url = f"http://127.0.0.1:{self.port}/v1/jobs/{job_id}/logs"
        return httpx.get(url, headers=self.headers, timeout=5).text

    def submit(self, repo: str) -> str:
        return str(json.loads(reporun("submit", repo, "--json", env=self.env).stdout)["id"])

    def wait_status(
        self, job_id: str, statuses: set[str], timeout: float = 60
    ) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["status"] not in statuses:
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        return job


@pytest.fixture
def cluster(tmp_path: Path, processes: list[Process]) -> Cluster:
    return Cluster(tmp_path, processes)
