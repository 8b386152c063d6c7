"""Run a job's command in bubblewrap, with limits, and bring back its output and exit code.

The job gets: a read-only system (/usr and a few files of /etc), its own copy of the checkout
in a size-capped tmpfs at /work, a size-capped /tmp, new PID/IPC/UTS/network/user namespaces,
rlimits on address space, processes, file size and open files, and an environment holding only
what the job asked for. When the worker is root, each job also runs as its own unprivileged uid,
so the process limit is per job and every leftover process can be swept after it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from reporun.errors import SandboxError
from reporun.jobs import Limits

OutputSink = Callable[[bytes], Awaitable[None]]

# The job's home: its copy of the repository, on a tmpfs of the disk limit.
JOB_HOME = "/work"
# Files of /etc that programs commonly need and that hold no secrets.
ETC_FILES = (
    "alternatives",
    "ca-certificates",
    "ssl",
    "hosts",
    "resolv.conf",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "localtime",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "mime.types",
    "protocols",
    "services",
    "os-release",
    "debian_version",
)
# Copies the checkout into the job's tmpfs home, then runs the command ($1) in a shell.
PRELUDE = (
    'cp -a /src/. "$HOME"/ || { echo "reporun: the repository does not fit in the disk limit" >&2;'
    ' exit 125; }; cd "$HOME" && exec /bin/sh -c "$1"'
)
KILL_GRACE = 2.0


@dataclass(frozen=True, slots=True)
class RunResult:
    exit_code: int | None
    timed_out: bool
    cancelled: bool
    output_bytes: int
    truncated: bool
    seconds: float


class Sandbox(Protocol):
    name: str

    async def run(
        self,
        *,
        workspace: Path,
        command: str,
        env: Mapping[str, str],
        limits: Limits,
        on_output: OutputSink,
        stop: asyncio.Event,
    ) -> RunResult:
        """Run `command` on a copy of `workspace`; `stop` kills it (cancel, lost lease)."""


def job_environment(env: Mapping[str, str]) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": JOB_HOME,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "USER": "runner",
        "CI": "true",
        "REPORUN": "1",
        **env,
    }


class UidPool:
    """Unprivileged uids for jobs, one per running job on this host (locks in /run)."""

    def __init__(self, base: int, count: int, lock_dir: Path = Path("/run/reporun-uids")) -> None:
        self.base = base
        self.count = count
        self.lock_dir = lock_dir

    @contextlib.contextmanager
    def take(self) -> Iterator[int]:
        self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for _ in range(1000):
            uid = self.base + random.randrange(self.count)
            path = self.lock_dir / str(uid)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # Its last holder may have removed the file between our open and our lock.
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    raise BlockingIOError
            except (BlockingIOError, FileNotFoundError):
                os.close(fd)
                continue
            try:
                yield uid
            finally:
                path.unlink(missing_ok=True)
                os.close(fd)
            return
        raise SandboxError("no free uid for the job")


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in ETC_FILES:
        path = Path("/etc") / name
        if path.exists():
            args += ["--ro-bind", str(path), str(path)]
    return args


def bwrap_argv(
    *,
    workspace: Path,
    command: str,
    env: Mapping[str, str],
    limits: Limits,
    uid: int | None,
    nproc: int,
    status_fd: int | None = None,
) -> list[str]:
    """The whole command line: drop to the job's uid, set rlimits, enter bubblewrap."""
    argv: list[str] = []
    if uid is not None:
        argv += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    argv += [
        "prlimit",
        f"--as={limits.memory}",
        f"--nproc={nproc}",
        f"--fsize={limits.disk}",
        "--nofile=1024",
        "--core=0",
        "--",
        "bwrap",
        "--unshare-all",
        *(["--share-net"] if limits.network else []),
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "reporun",
        "--clearenv",
    ]
    if status_fd is not None:
        argv += ["--json-status-fd", str(status_fd)]
    for name, value in job_environment(env).items():
        argv += ["--setenv", name, value]
    argv += _system_binds()
    argv += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(limits.disk),
        "--tmpfs",
        "/tmp",
        "--size",
        str(limits.disk),
        "--tmpfs",
        JOB_HOME,
        "--ro-bind",
        str(workspace),
        "/src",
        # bwrap's root is a tmpfs; read-only, it cannot hold files (no unbounded RAM disk).
        "--remount-ro",
        "/",
        "--chdir",
        JOB_HOME,
        "--",
        "/bin/sh",
        "-c",
        PRELUDE,
        "reporun",
        command,
    ]
    return argv


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                count += entry.stat().st_uid == uid
    return count


class Bubblewrap:
    name = "bwrap"

    def __init__(self, uids: UidPool | None = None) -> None:
        self.root = os.geteuid() == 0
        self.uids = uids if uids is not None else UidPool(1_100_000, 65_536)

    @staticmethod
    def problems() -> list[str]:
        """Why the sandbox cannot work on this host; empty when it can."""
        found = []
        for tool in ("bwrap", "prlimit", "setpriv"):
            if shutil.which(tool) is None:
                found.append(
                    f"{tool} is not installed (Debian: apt-get install bubblewrap util-linux)"
                )
        return found

    async def run(
        self,
        *,
        workspace: Path,
        command: str,
        env: Mapping[str, str],
        limits: Limits,
        on_output: OutputSink,
        stop: asyncio.Event,
    ) -> RunResult:
        with contextlib.ExitStack() as stack:
            if self.root:
                uid: int | None = stack.enter_context(self.uids.take())
                nproc = limits.processes
                os.chmod(workspace, 0o755)
            else:
                # The process limit counts every process of this user: add what already runs.
                uid, nproc = None, _processes_of(os.getuid()) + limits.processes
            status_read, status_write = os.pipe()
            stack.callback(os.close, status_read)
            argv = bwrap_argv(
                workspace=workspace,
                command=command,
                env=env,
                limits=limits,
                uid=uid,
                nproc=nproc,
                status_fd=status_write,
            )
            try:
                result = await run_process(
                    argv, limits=limits, on_output=on_output, stop=stop, pass_fds=(status_write,)
                )
            finally:
                os.close(status_write)
                if uid is not None:
                    await sweep_uid(uid)
            if not result.cancelled and b"child-pid" not in _read_all(status_read):
                raise SandboxError(f"bubblewrap could not start the job (exit {result.exit_code})")
            return result


class Unsandboxed:
    """REPORUN_SANDBOX=none: the job runs as the worker, with only a timeout. Trusted code only."""

    name = "none"

    async def run(
        self,
        *,
        workspace: Path,
        command: str,
        env: Mapping[str, str],
        limits: Limits,
        on_output: OutputSink,
        stop: asyncio.Event,
    ) -> RunResult:
        environment = {**job_environment(env), "HOME": str(workspace)}
        argv = ["/bin/sh", "-c", command]
        return await run_process(
            argv, limits=limits, on_output=on_output, stop=stop, cwd=workspace, env=environment
        )


async def sweep_uid(uid: int) -> None:
    """Kill every process left with the job's uid (`kill -1` as that uid reaches exactly them)."""
    process = await asyncio.create_subprocess_exec(
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--",
        "kill",
        "-9",
        "-1",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin"},
    )
    await process.wait()


async def run_process(
    argv: list[str],
    *,
    limits: Limits,
    on_output: OutputSink,
    stop: asyncio.Event,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> RunResult:
    """Run, stream merged stdout/stderr capped at the log limit, kill the group on timeout/stop."""
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
            env=dict(env or {}),
            start_new_session=True,
            pass_fds=pass_fds,
        )
    except OSError as exc:
        raise SandboxError(f"cannot start the sandbox: {exc}") from exc
    assert process.stdout is not None
    counter = _Capped(limits.log, on_output)
    reader = asyncio.create_task(counter.drain(process.stdout))
    waiter = asyncio.create_task(process.wait())
    stopper = asyncio.create_task(stop.wait())
    timed_out = cancelled = False
    try:
        done, _ = await asyncio.wait(
            {waiter, stopper}, timeout=limits.timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            timed_out = stopper not in done
            cancelled = not timed_out
            _kill_group(process.pid)
            await waiter
    except asyncio.CancelledError:
        _kill_group(process.pid)
        await asyncio.shield(waiter)
        raise
    finally:
        stopper.cancel()
    # The pipe closes once every process holding it is gone; do not wait on stragglers forever.
    try:
        await asyncio.wait_for(asyncio.shield(reader), KILL_GRACE)
    except TimeoutError:
        _kill_group(process.pid)
        reader.cancel()
    return RunResult(
        exit_code=process.returncode,
        timed_out=timed_out,
        cancelled=cancelled,
        output_bytes=counter.seen,
        truncated=counter.truncated,
        seconds=time.monotonic() - started,
    )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class _Capped:
    """Passes on output up to `limit` bytes, then drops the rest but keeps the pipe drained."""

    def __init__(self, limit: int, sink: OutputSink) -> None:
        self.limit = limit
        self.sink = sink
        self.kept = 0
        self.seen = 0
        self.truncated = False

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(256 * 1024):
            self.seen += len(chunk)
            room = self.limit - self.kept
            if room <= 0:
                self.truncated = True
                continue
            if len(chunk) > room:
                chunk = chunk[:room]
                self.truncated = True
            self.kept += len(chunk)
            await self.sink(chunk)
