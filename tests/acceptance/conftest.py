"""The CLI and the server as subprocesses, as a user runs them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.processes import Process, Processes, require_tool
from tests.harness.server import Server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Every process the test starts, killed at its end."""
    started = Processes()
    yield started
    started.close()


@pytest.fixture
def served(tmp_path: Path, processes: Processes) -> dict[str, object]:
    """`reporun serve` with two workers on a free port."""
    require_tool("bwrap", "the job sandbox")
    server = Server(processes, tmp_path / "data").serve(tmp_path / "serve.log")
    return {
        "port": server.port,
        "data": server.data_dir,
        "env": server.env,
        "token": server.token,
        "process": server.process,
    }


class Cluster:
    """`reporun serve --workers 0` as the API, with `reporun worker` processes started apart."""

    def __init__(self, tmp_path: Path, processes: Processes) -> None:
        require_tool("bwrap", "the job sandbox")
        self.tmp_path = tmp_path
        self.data = tmp_path / "data"
        self.server = Server(processes, self.data).serve(tmp_path / "serve.log", "--workers", "0")
        self.port = self.server.port
        self.env = self.server.env
        self.api = self.server.blocking_client(timeout=5)

    def worker(self, name: str, **env: str) -> Process:
        worker_env = {
            "REPORUN_DATABASE_URL": f"sqlite:///{self.data / 'reporun.db'}",
            "REPORUN_ALLOWED_SCHEMES": "https,git",
            "REPORUN_TRUSTED_HOSTS": "127.0.0.1",
            "REPORUN_POLL_INTERVAL": "0.05",
            **env,
        }
        return self.server.start(self.tmp_path / f"{name}.log", "worker", **worker_env)

    def submit(self, repo: str) -> str:
        """Through the CLI: `reporun submit REPO --json`."""
        return str(json.loads(self.server.cli("submit", repo, "--json").stdout)["id"])


@pytest.fixture
def cluster(tmp_path: Path, processes: Processes) -> Iterator[Cluster]:
    running = Cluster(tmp_path, processes)
    yield running
    running.api.close()
