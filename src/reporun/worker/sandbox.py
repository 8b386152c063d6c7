"""Run a job's command in bubblewrap, with limits, and bring back its output and exit code.

The job gets (worker/bwrap.py makes the command line): a read-only system (the host's /usr and
a few files of /etc, or an image runtime's whole root filesystem), its own copy of the checkout
in a size-capped tmpfs at /work, a size-capped /tmp, new PID/IPC/UTS/network/user namespaces
(the network one made by worker/netjail.py for a job of network `registries` or `open`),
rlimits on address space, processes, file size and open files, and an environment holding only
what the job asked for. When the worker is root, each job also runs as its own unprivileged uid,
so the process limit is per job and every leftover process can be swept after it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

from reporun.errors import ConfigError, SandboxError
from reporun.jobs import Limits
from reporun.worker.bwrap import brought, bwrap_argv, etc_copies, job_environment
from reporun.worker.names import JobNames
from reporun.worker.netjail import (
    OPEN_RESOLV_CONF,
    TUN,
    TUN_NAMESPACE,
    OpenTools,
    helper_python,
    open_jail,
    proxy_jail,
    tun_usable_by_all,
)
from reporun.worker.pidns import InitWatch
from reporun.worker.process import OutputSink, RunResult, run_process
from reporun.worker.runtimes import Root
from reporun.worker.seccomp import socket_filter
from reporun.worker.uids import DEFAULT_UID_BASE, DEFAULT_UID_COUNT, UidPool, sweep_uid

logger = logging.getLogger("reporun.worker")

# What a job's network helper may run beside it as its uid (its relay's threads, two per
# proxied connection, slirp4netns): not taken from the job's own process limit.
HELPER_THREADS = 132
# An image's /etc/hosts when it brings none (harden leaves an empty one): localhost.
HOSTS = b"127.0.0.1 localhost\n::1 localhost\n"


@dataclass(frozen=True, slots=True)
class World:
    """What surrounds a job's command beyond its checkout: the image runtime's root (None:
    the host's system), the egress proxy's socket (network mode `registries`) or the name
    server's (`open`), for a setup phase the directory what it adds is kept in, and for a
    command after one the directory whose entries are bound read-only into its workspace."""

    root: Root | None = None
    egress: Path | None = None
    names: JobNames | None = None
    keep: int | None = None  # the descriptor a setup phase writes what it made to, as tar
    bring: Path | None = None


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    kind: Literal["bwrap", "none"] = "bwrap"
    # The uids jobs run as when the worker is root.
    uid_base: int = DEFAULT_UID_BASE
    uid_count: int = DEFAULT_UID_COUNT
    # Whether this server gives network `open` to anyone: then the worker must be able to.
    open_network: bool = False


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
        world: World = World(),
    ) -> RunResult:
        """Run `command` on a copy of `workspace` in `world` (an image runtime's root, or the
        host's system; a job of network mode `registries` reaches the outside only through
        the proxy at `world.egress`); `stop` kills it (cancel, lost lease)."""


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _data_fd(stack: contextlib.ExitStack, content: bytes) -> int:
    """A descriptor to read `content` from, of any size (a memfd), closed with `stack`."""
    fd = os.memfd_create("reporun-data", os.MFD_CLOEXEC)
    stack.callback(os.close, fd)
    os.write(fd, content)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                count += entry.stat().st_uid == uid
    return count


class Bubblewrap:
    name = "bwrap"

    def __init__(
        self,
        uids: UidPool | None = None,
        *,
        open_network: bool = False,
    ) -> None:
        self.root = os.geteuid() == 0
        self.uids = uids if uids is not None else UidPool()
        self.open_network = open_network
        # The network namespace of a `registries` or `open` job is made with it, as the
        # job's uid; an `open` job's network is served by slirp4netns, and filtered.
        self.python = helper_python()
        self.open_tools = OpenTools.find()
        self.seccomp = socket_filter()

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

    def open_problems(self) -> list[str]:
        """Why this worker cannot give a job network `open`; empty when it can."""
        found = []
        if self.python is None:
            found.append("no Python that every uid may run (/usr/bin/python3)")
        if self.open_tools is None:
            found.append(
                "slirp4netns, iptables-restore and ip6tables-restore are needed (Debian: "
                "apt-get install slirp4netns iptables)"
            )
        if not TUN.exists():
            found.append(f"{TUN} is missing (the tun module: modprobe tun)")
        if not self.root:
            # slirp4netns runs beside the sandbox as the job's uid: on a worker that is not
            # root, that is the worker's own, whose secrets it could read if a job broke it.
            found.append("the worker does not run as root (jobs would share its uid)")
        elif not tun_usable_by_all():
            found += [
                f"{tool} is not installed"
                for tool in ("unshare", "mount", "mknod")
                if shutil.which(tool) is None
            ]
        return found

    def _jail(self, limits: Limits, world: World) -> list[str] | None:
        """The network helper's command line for a job's network mode (None: no network)."""
        if limits.network == "registries":
            if world.egress is None or self.python is None:
                raise SandboxError(
                    "network mode registries needs the egress proxy and a Python every uid may run"
                )
            return proxy_jail(self.python, world.egress)
        if limits.network == "open":
            if not self.open_network:
                raise SandboxError("network mode open is not offered by this worker")
            problems = self.open_problems()
            tools = self.open_tools
            if problems or self.python is None or tools is None or world.names is None:
                raise SandboxError("network mode open cannot be had here: " + "; ".join(problems))
            return open_jail(self.python, world.names.socket, tools, world.names.refused)
        return None

    async def run(
        self,
        *,
        workspace: Path,
        command: str,
        env: Mapping[str, str],
        limits: Limits,
        on_output: OutputSink,
        stop: asyncio.Event,
        world: World = World(),
    ) -> RunResult:
        called = time.monotonic()
        jail = self._jail(limits, world)
        with contextlib.ExitStack() as stack:
            # The command's start, told by a byte on this pipe (a setup phase's run is not
            # split: its descriptor $2 is the archive's).
            mark_read = mark_write = None
            if world.keep is None:
                mark_read, mark_write = os.pipe()
                stack.callback(os.close, mark_read)
            if self.root:
                uid: int | None = stack.enter_context(self.uids.take())
                nproc = limits.processes + (HELPER_THREADS if jail else 0)
                os.chmod(workspace, 0o755)
                for fd in (world.keep, mark_write):  # reopened as the job's uid
                    if fd is not None and uid is not None:
                        os.fchown(fd, uid, uid)
            else:
                # The process limit counts every process of this user: add what already runs.
                uid, nproc = None, _processes_of(os.getuid()) + limits.processes
                nproc += HELPER_THREADS if jail else 0
            status_read, status_write = os.pipe()
            stack.callback(os.close, status_read)
            files: dict[str, bytes] = {}
            if limits.network == "open":  # the relay to the worker's name server
                files["/etc/resolv.conf"] = OPEN_RESOLV_CONF
            if world.root is not None and _is_empty(world.root.path / "etc" / "hosts"):
                files["/etc/hosts"] = HOSTS  # an image's, as a container runtime would write
            data = [(_data_fd(stack, content), path) for path, content in files.items()]
            copies = etc_copies() if world.root is None else {}
            copied = [(_data_fd(stack, content), path) for path, content in copies.items()]
            passed = [status_write, *(fd for fd, _ in data), *(fd for fd, _ in copied)]
            seccomp = _data_fd(stack, self.seccomp) if self.seccomp is not None else None
            if seccomp is not None:
                passed.append(seccomp)
            if world.keep is not None:
                passed.append(world.keep)
            if mark_write is not None:
                passed.append(mark_write)
            before = (
                TUN_NAMESPACE
                if jail and limits.network == "open" and self.root and (not tun_usable_by_all())
                else ()
            )
            argv = bwrap_argv(
                workspace=workspace,
                command=command,
                env=env,
                limits=limits,
                uid=uid,
                nproc=nproc,
                status_fd=status_write,
                root=world.root,
                jail=jail,
                keep=world.keep,
                mark=mark_write,
                bring=brought(world.bring, workspace),
                before=before,
                data=data,
                copied=copied,
                seccomp_fd=seccomp,
            )
            began = _Mark(mark_read) if mark_read is not None else None
            init = InitWatch(status_read)
            stack.callback(init.close)
            try:
                result = await run_process(
                    argv,
                    limits=limits,
                    on_output=on_output,
                    stop=stop,
                    pass_fds=tuple(passed),
                )
            finally:
                os.close(status_write)
                if mark_write is not None:
                    os.close(mark_write)
                if began is not None:
                    began.close()
                # With no network helper beside it, every process of the job is in its PID
                # namespace, gone with the namespace's init; else its uid is swept.
                if uid is not None and not (jail is None and await init.all_gone()):
                    await sweep_uid(uid)
            if began is not None and began.at is not None:
                result = replace(result, began=began.at - called)
            status = bytes(init.status) + _read_all(status_read)
            if not result.cancelled and b"child-pid" not in status:
                raise SandboxError(f"bubblewrap could not start the job (exit {result.exit_code})")
            return result


class _Mark:
    """When the first byte arrives on a pipe (monotonic), read on the event loop."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.at: float | None = None
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(fd, self._read)
        self.watching = True

    def _read(self) -> None:
        now = time.monotonic()
        try:
            told = os.read(self.fd, 64)
        except OSError:
            told = b""
        if told and self.at is None:
            self.at = now
        self.close()  # a byte, or the end: the pipe has nothing more to say

    def close(self) -> None:
        if self.watching:
            self.watching = False
            self.loop.remove_reader(self.fd)


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
        world: World = World(),
    ) -> RunResult:
        if limits.network != "none" or world.keep is not None or world.bring is not None:
            raise SandboxError("networks and setup phases need the sandbox (REPORUN_SANDBOX=bwrap)")
        if world.root is not None:
            raise SandboxError("image runtimes need the sandbox (REPORUN_SANDBOX=bwrap)")
        environment = {**job_environment(env), "HOME": str(workspace)}
        argv = ["/bin/sh", "-c", command]
        return await run_process(
            argv, limits=limits, on_output=on_output, stop=stop, cwd=workspace, env=environment
        )


def build_sandbox(config: SandboxConfig) -> Sandbox:
    """The sandbox the configuration asks for; ConfigError (one line) when this host cannot
    give it."""
    if config.kind == "none":
        logger.warning(
            "REPORUN_SANDBOX=none: jobs run unconfined as this user; trusted code only",
            extra={"action": "sandbox_off"},
        )
        return Unsandboxed()
    problems = Bubblewrap.problems()
    if problems:
        raise ConfigError("; ".join(problems))
    sandbox = Bubblewrap(
        UidPool(config.uid_base, config.uid_count),
        open_network=config.open_network,
    )
    if config.open_network and (problems := sandbox.open_problems()):
        raise ConfigError("REPORUN_NETWORK_OPEN is set, but " + "; ".join(problems))
    return sandbox
