"""Long-running subprocesses (servers, workers), each leading a process group of its own and
writing to a log file, and the register that stops them all at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx

from tests.harness import HarnessError

TAIL = 3000  # characters of a log shown when a process fails


def require_tool(name: str, why: str) -> str:
    """A component a test needs; missing, the test fails (never skips)."""
    path = shutil.which(name)
    if path is None:
        raise HarnessError(
            f"{name} is required for {why}; `make test` installs it when run as root"
        )
    return path


class Process:
    """A subprocess in a new session (so its children can be stopped with it), output to `log`."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.log = log
        self.handle = log.open("wb")
        self.popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def returncode(self) -> int | None:
        """None while it runs."""
        return self.popen.poll()

    def tail(self, chars: int = TAIL) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""

    def wait_http(self, url: str, timeout: float = 60) -> None:
        """Until `url` answers 200; HarnessError with the log's end when the process exits or
        `timeout` passes first."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1, trust_env=False) as http:  # loopback: no proxy
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise HarnessError(f"exited {self.popen.returncode}:\n{self.tail()}")
                try:
                    if http.get(url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise HarnessError(f"{url} did not answer:\n{self.tail()}")

    def send(self, sig: int) -> None:
        """`sig` to its whole group; SIGKILL to it alone, as a crash would be."""
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGKILL:
                self.popen.send_signal(sig)
            else:
                os.killpg(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig`, wait up to `timeout` for the exit (then SIGKILL the group); its status."""
        if self.popen.poll() is None:
            self.send(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.popen.wait()
        self.handle.close()
        return int(self.popen.returncode)

    def close(self) -> None:
        """SIGKILL whatever is left of its group, reap it, close the log."""
        self._kill_group()
        self.popen.wait()
        self.handle.close()

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)


class Processes:
    """Every process a test or a benchmark started; `close` (or `stop`) ends them all."""

    def __init__(self) -> None:
        self._started: list[Process] = []

    def start(self, argv: Sequence[str], env: Mapping[str, str], log: Path) -> Process:
        process = Process(argv, env, log)
        self._started.append(process)
        return process

    def __iter__(self) -> Iterator[Process]:
        return iter(self._started)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to every live one at once, up to `timeout` for them all to exit, then
        `close`: a graceful end for the benchmarks."""
        live = [p for p in self._started if p.returncode is None]
        for process in live:
            process.send(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(max(0.0, deadline - time.monotonic()))
        self.close()

    def close(self) -> None:
        for process in self._started:
            process.close()
