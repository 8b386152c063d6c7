"""A real git server on loopback (`git daemon`) serving bare repositories made on the spot, so
jobs go through the real clone path (not `file://`)."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.harness import HarnessError
from tests.harness.ports import LOOPBACK, free_port
from tests.harness.processes import require_tool

START_TIMEOUT = 10.0
GIT_TIMEOUT = 60.0
RUN_SH = ("run.sh",)


def git_env(home: Path) -> dict[str, str]:
    """git without the user's or the system's configuration, never prompting, with an author."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.org",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.org",
    }


def run_git(*args: str, cwd: Path | None = None) -> str:
    """Run git (in `cwd`), return its stdout; HarnessError with its stderr when it fails."""
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=git_env(cwd or Path("/tmp")),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT,
    )
    if result.returncode != 0:
        raise HarnessError(f"git {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result.stdout.strip()


class GitServer:
    """`git daemon` on `host` serving the bare repositories under `base`; their working
    copies live under `work`. With `log`, every connection and request is written there."""

    def __init__(
        self, base: Path, work: Path, host: str = LOOPBACK, *, log: Path | None = None
    ) -> None:
        self.base = base
        self.work = work
        self.host = host
        self.port = free_port()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        require_tool("git", "the git server of the tests")
        log = self.log.open("ab") if self.log is not None else None
        self.process = subprocess.Popen(
            [
                "git",
                "daemon",
                *(["--verbose"] if log is not None else []),
                "--reuseaddr",
                "--export-all",
                f"--listen={self.host}",
                f"--port={self.port}",
                f"--base-path={self.base}",
                str(self.base),
            ],
            env=git_env(self.base),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log or subprocess.DEVNULL,
            start_new_session=True,  # `git daemon` forks the real server: stop the group
        )
        if log is not None:
            log.close()  # the daemon holds its own copy
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:  # the port was taken (by a parallel run)
                break
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise HarnessError("git daemon did not start")

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> GitServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def requests(self) -> list[str]:
        """The repository paths clients asked for so far (`log` needed), e.g. `/x.git`."""
        if self.log is None:
            raise HarnessError("this git server keeps no log")
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return re.findall(r"Request (?:upload-pack|receive-pack) for '([^']*)'", text)

    def url(self, name: str) -> str:
        return f"git://{self.host}:{self.port}/{name}.git"

    def make_repo(
        self,
        files: dict[str, str],
        *,
        executable: tuple[str, ...] = RUN_SH,
        name: str | None = None,
    ) -> str:
        """A repository with `files` (one commit, branch main); returns its git:// URL."""
        name = name or f"repo-{secrets.token_hex(4)}"
        source = self.work / name
        source.mkdir(parents=True)
        run_git("init", "-q", "-b", "main", cwd=source)
        self.commit(source, files, executable=executable)
        run_git("clone", "-q", "--bare", str(source), str(self.base / f"{name}.git"))
        return self.url(name)

    def commit(
        self, source: Path, files: dict[str, str], *, executable: tuple[str, ...] = RUN_SH
    ) -> str:
        for path, text in files.items():
            target = source / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            if path in executable:
                target.chmod(0o755)
        run_git("add", "-A", cwd=source)
        run_git("commit", "-q", "--allow-empty", "-m", "change", cwd=source)
        return run_git("rev-parse", "HEAD", cwd=source)

    def push(self, name: str, files: dict[str, str]) -> str:
        """A new commit on main of an existing repository; returns its SHA."""
        source = self.work / name
        sha = self.commit(source, files)
        run_git("push", "-q", str(self.base / f"{name}.git"), "main", cwd=source)
        return sha
