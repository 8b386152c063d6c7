"""reporun as a user runs it: the CLI, and its server (`reporun serve` or `reporun api`) and
workers as subprocesses on loopback, all sharing one environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.harness import HarnessError
from tests.harness.client import POLL, BlockingClient, Client
from tests.harness.ports import LOOPBACK, free_port
from tests.harness.processes import Process, Processes

REPORUN = (sys.executable, "-m", "reporun")
STARTUP_TIMEOUT = 60.0
CLI_TIMEOUT = 60.0


def cli_env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    """This environment without reporun's or PostgreSQL's settings (they could point a server
    at another database), quiet logs, `data_dir`, the URL of a server on `port`, per-user
    (XDG) data and state dirs beside `data_dir` rather than in the real home, and `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("REPORUN_", "POSTGRES_"))
    }
    user = data_dir.with_name(f"{data_dir.name}-user")
    env.update(
        REPORUN_DATA_DIR=str(data_dir),
        REPORUN_URL=f"http://{LOOPBACK}:{port}",
        REPORUN_LOG_LEVEL="WARNING",
        XDG_DATA_HOME=str(user / "data"),
        XDG_STATE_HOME=str(user / "state"),
        XDG_CONFIG_HOME=str(user / "config"),
    )
    env.update(extra)
    return env


def reporun(
    *args: str, env: dict[str, str], timeout: float = CLI_TIMEOUT, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m reporun ARGS`, to its end (run from `cwd`, else this directory)."""
    return subprocess.run(
        [*REPORUN, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


class Server:
    """reporun on a free loopback port: the environment its processes and CLI commands share
    (`env` added), the API process once `serve` or `api` started it, an admin token."""

    def __init__(self, processes: Processes, data_dir: Path, **env: str) -> None:
        self.processes = processes
        self.data_dir = data_dir
        self.port = free_port()
        self.env = cli_env(data_dir, self.port, **env)
        self.process: Process | None = None
        self.token = ""

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """`reporun ARGS` with this environment."""
        return reporun(*args, env=self.env, timeout=timeout)

    def _cli_ok(self, *args: str) -> str:
        done = self.cli(*args)
        if done.returncode != 0:
            shown = " ".join(args)
            raise HarnessError(f"reporun {shown} exited {done.returncode}: {done.stderr[-800:]}")
        return done.stdout.strip()

    def upgrade(self) -> None:
        """`reporun db upgrade`: the schema on its database."""
        self._cli_ok("db", "upgrade")

    def mint(self, name: str, role: str = "user") -> str:
        """A token for `name` (`reporun token create`; local auth, the server's secret key)."""
        return self._cli_ok("token", "create", name, "--role", role).splitlines()[-1]

    def start(self, log: Path, *args: str, prefix: Sequence[str] = (), **env: str) -> Process:
        """`reporun ARGS` (after `prefix`, e.g. a network namespace's) with this environment
        and `env`, output to `log`."""
        return self.processes.start([*prefix, *REPORUN, *args], {**self.env, **env}, log)

    def serve(self, log: Path, *args: str, timeout: float = STARTUP_TIMEOUT) -> Server:
        """`reporun serve ARGS` on its port and data dir, once /healthz answers; with the
        admin token it stored."""
        port, data = str(self.port), str(self.data_dir)
        self.process = self.start(log, "serve", "--port", port, "--data-dir", data, *args)
        self.process.wait_http(f"{self.url}/healthz", timeout)
        self.token = (self.data_dir / "admin.token").read_text().strip()
        return self

    def api(
        self, log: Path, *, ready: str = "/healthz", timeout: float = STARTUP_TIMEOUT
    ) -> Server:
        """`reporun api` on its port, once `ready` answers (/readyz: its database too)."""
        self.process = self.start(log, "api", "--port", str(self.port))
        self.process.wait_http(self.url + ready, timeout)
        return self

    def client(
        self, token: str | None = None, *, timeout: float = 30.0, poll: float = POLL
    ) -> Client:
        """A client with `token` (default the admin's); close it (`async with`)."""
        return Client.connect(self.url, token or self.token, timeout=timeout, poll=poll)

    def blocking_client(
        self, token: str | None = None, *, timeout: float = 30.0, poll: float = POLL
    ) -> BlockingClient:
        """The same for synchronous callers; `close` it."""
        return BlockingClient(self.url, token or self.token, timeout=timeout, poll=poll)
