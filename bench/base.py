"""What the benchmarks run against: a git:// server on loopback and `reporun serve` processes.

Every helper here is bounded (each wait has a timeout) and cleans up after itself: the async
context managers stop what they started even when the body fails or is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

import httpx

LOOPBACK = "127.0.0.1"
RUN_SH = "#!/bin/sh\necho ok\n"
STOP_GRACE = 20.0
STARTUP_TIMEOUT = 60.0
DAEMON_TIMEOUT = 15.0
GIT_TIMEOUT = 60.0


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def stamp(value: str) -> float:
    """An RFC 3339 time from the API as seconds since the epoch."""
    return datetime.fromisoformat(value).timestamp()


class BenchError(Exception):
    """A benchmark could not run or a job did not succeed: report it and exit 1."""


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def traversable_dir(path: Path) -> Path:
    """A directory others may pass through but not list: the jobs' uids reach clones in it."""
    path.mkdir(mode=0o711, exist_ok=True)
    path.chmod(0o711)  # mkdir's mode is masked by the umask
    return path


def git_env(home: Path) -> dict[str, str]:
    """git without the user's or the system's configuration, and never prompting."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
    }


async def run_command(
    argv: list[str], *, env: dict[str, str], timeout: float, cwd: Path | None = None
) -> str:
    """Run a command, return its stdout; BenchError with its stderr when it fails. Killed when
    the caller's deadline (asyncio.timeout) or `timeout` passes."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    if process.returncode != 0:
        message = err.decode(errors="replace").strip()[-800:]
        raise BenchError(f"{' '.join(argv)} exited {process.returncode}: {message}")
    return out.decode(errors="replace").strip()


async def run_git(*args: str, cwd: Path) -> str:
    """Run git in `cwd`, return its stdout."""
    return await run_command(["git", *args], env=git_env(cwd), timeout=GIT_TIMEOUT, cwd=cwd)


async def make_repository(base: Path) -> Path:
    """A bare repository `base/repo.git` with one commit: an executable run.sh that says ok."""
    source = base / "source"
    source.mkdir()
    (source / "run.sh").write_text(RUN_SH)
    (source / "run.sh").chmod(0o755)
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    await run_git("init", "--quiet", "--initial-branch=main", cwd=source)
    await run_git("add", "run.sh", cwd=source)
    await run_git(*ident, "commit", "--quiet", "-m", "run.sh says ok", cwd=source)
    await run_git("clone", "--quiet", "--bare", str(source), str(base / "repo.git"), cwd=base)
    return base / "repo.git"


@contextlib.asynccontextmanager
async def git_daemon(base: Path) -> AsyncIterator[str]:
    """Serve `base` over git:// on loopback; yield the URL of `repo.git` once it answers."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        "git",
        "daemon",
        "--reuseaddr",
        f"--base-path={base}",
        "--export-all",
        f"--listen={LOOPBACK}",
        f"--port={port}",
        str(base),
        env=git_env(base),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"git://{LOOPBACK}:{port}/repo.git"
    try:
        await _wait_for_git(url, process, base)
        yield url
    finally:
        await stop_process(process, grace=5.0)


async def _wait_for_git(url: str, process: asyncio.subprocess.Process, cwd: Path) -> None:
    deadline = time.monotonic() + DAEMON_TIMEOUT
    while True:
        if process.returncode is not None:
            raise BenchError(f"git daemon exited with {process.returncode}")
        try:
            async with asyncio.timeout(5.0):
                await run_git("ls-remote", url, cwd=cwd)
            return
        except (BenchError, TimeoutError):
            if time.monotonic() > deadline:
                raise BenchError(f"git daemon did not answer on {url}") from None
            await asyncio.sleep(0.1)


async def stop_process(process: asyncio.subprocess.Process, *, grace: float) -> None:
    """SIGTERM, wait up to `grace`, then SIGKILL its whole process group (it leads one)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), grace)
    # Children it left behind (reporun's workers share its group).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.returncode is None:
        await process.wait()


@dataclass(frozen=True)
class Reporun:
    """A running `reporun serve`."""

    url: str
    token: str
    workers: int
    log_path: Path

    def client(self, timeout: float = 30.0) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            trust_env=False,  # loopback only: no proxy from the environment
        )

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _server_env(work_dir: Path) -> dict[str, str]:
    """This environment without reporun or PostgreSQL settings (those could point the server
    at another database), quiet logs, and workspaces under our temporary directory."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("REPORUN_", "POSTGRES_"))
    }
    env["REPORUN_LOG_LEVEL"] = "WARNING"
    env["REPORUN_WORK_DIR"] = str(work_dir)
    return env


def _open_log(path: Path) -> IO[bytes]:
    return path.open("wb")


@contextlib.asynccontextmanager
async def reporun_serve(
    root: Path,
    name: str,
    workers: int,
    *,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> AsyncIterator[Reporun]:
    """`reporun serve` on a free loopback port with its own data dir; stopped on exit.
    `args` go to the command line (`--min-workers` ...), `env` adds REPORUN_* settings."""
    port = free_port()
    data_dir = root / f"data-{name}"
    log_path = root / f"serve-{name}.log"
    with _open_log(log_path) as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "reporun",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--workers",
            str(workers),
            *args,
            env={**_server_env(root / f"work-{name}"), **(env or {})},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    server = Reporun(f"http://{LOOPBACK}:{port}", "", workers, log_path)
    try:
        await _wait_healthy(server, process)
        token = (data_dir / "admin.token").read_text().strip()
        yield Reporun(server.url, token, workers, log_path)
    finally:
        await stop_process(process, grace=STOP_GRACE)


async def _wait_healthy(server: Reporun, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    async with server.client(timeout=2.0) as http:
        while True:
            if process.returncode is not None:
                raise BenchError(
                    f"reporun serve exited with {process.returncode}:\n{server.log_tail()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/healthz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"reporun serve did not answer in {STARTUP_TIMEOUT:.0f} s")
            await asyncio.sleep(0.1)
