"""Run a job's command in bubblewrap, with limits, and bring back its output and exit code.

The job gets: a read-only system (the host's /usr and a few files of /etc, or an image
runtime's whole root filesystem), its own copy of the checkout
in a size-capped tmpfs at /work, a size-capped /tmp, new PID/IPC/UTS/network/user namespaces,
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from reporun.errors import ConfigError, SandboxError
from reporun.jobs import Limits
from reporun.worker.images import NETWORK_FILES
from reporun.worker.netjail import helper_python, netjail_argv, proxy_environment
from reporun.worker.process import OutputSink, RunResult, run_process
from reporun.worker.runtimes import Root
from reporun.worker.uids import DEFAULT_UID_BASE, DEFAULT_UID_COUNT, UidPool, sweep_uid

logger = logging.getLogger("reporun.worker")

# The job's home (its copy of the repository) and its /tmp share one tmpfs of the disk limit.
JOB_HOME = "/work"
JOB_DISK = "/sandbox"
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
COPY = (
    'cp -a /src/. "$HOME"/ || { echo "reporun: the repository does not fit in the disk limit" >&2;'
    " exit 125; }; "
)
PRELUDE = COPY + 'cd "$HOME" && exec /bin/sh -c "$1"'
# A setup phase: the same, then what it added at the top of the workspace (node_modules,
# target, .venv; not the other dot-files: caches, shell history, credentials) goes out as a
# tar archive on the descriptor $2 (through /proc: dash takes descriptors up to 9 only).
SETUP_PRELUDE = (
    COPY + 'cd "$HOME" && /bin/sh -c "$1"; code=$?; [ "$code" = 0 ] || exit "$code"; '
    "fd=$2; set --; "
    'for entry in * .venv; do { [ -e "$entry" ] || [ -L "$entry" ]; } || continue; '
    '{ [ -e "/src/$entry" ] || [ -L "/src/$entry" ]; } && continue; set -- "$@" "$entry"; done; '
    '[ "$#" = 0 ] || tar -cf - -- "$@" > "/proc/self/fd/$fd" || '
    '{ echo "reporun: what setup made could not be kept (tar)" >&2; exit 125; }'
)


@dataclass(frozen=True, slots=True)
class World:
    """What surrounds a job's command beyond its checkout: the image runtime's root (None:
    the host's system), the egress proxy's socket (network mode `registries`), for a setup
    phase the directory what it adds is kept in, and for a command after one the directory
    whose entries are bound read-only into its workspace."""

    root: Root | None = None
    egress: Path | None = None
    keep: int | None = None  # the descriptor a setup phase writes what it made to, as tar
    bring: Path | None = None


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    kind: Literal["bwrap", "none"] = "bwrap"
    # The uids jobs run as when the worker is root.
    uid_base: int = DEFAULT_UID_BASE
    uid_count: int = DEFAULT_UID_COUNT


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


def job_environment(
    env: Mapping[str, str], image_env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What a job's processes see: the image's `Env` (its PATH and LANG first of all), then
    reporun's own, then the job's variables."""
    image_env = dict(image_env or {})
    return {
        **image_env,
        "PATH": image_env.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
        "HOME": JOB_HOME,
        "TMPDIR": "/tmp",
        "LANG": image_env.get("LANG", "C.UTF-8"),
        "USER": "runner",
        "CI": "true",
        "REPORUN": "1",
        **env,
    }


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


# What reporun mounts itself: an image's own entries of these names are not bound.
MOUNTED = frozenset({"proc", "dev", "sys", "tmp", "run", "src", "work", JOB_DISK.lstrip("/")})


def _image_binds(root: Path, *, network: bool) -> list[str]:
    """An image runtime's root filesystem, read-only, entry by entry (its /etc whole: the
    image's, holding nothing of the host's but, for a job with a network, how the host
    resolves names)."""
    args: list[str] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name in MOUNTED:
            continue
        target = f"/{entry.name}"
        if entry.is_symlink():
            args += ["--symlink", os.readlink(entry.path), target]
        elif entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False):
            args += ["--ro-bind", entry.path, target]
    for name in NETWORK_FILES if network else ():
        # The image's copy is a regular file (images.harden makes it one) to bind over.
        if (root / "etc" / name).is_file() and not (root / "etc" / name).is_symlink():
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
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
    root: Root | None = None,
    jail: list[str] | None = None,
    keep: int | None = None,
    bring: Sequence[tuple[str, str, str]] = (),
) -> list[str]:
    """The whole command line: drop to the job's uid, make its network (`jail`, for mode
    `registries`), set rlimits, enter bubblewrap."""
    argv: list[str] = []
    if uid is not None:
        argv += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    if limits.network == "registries":
        if jail is None:
            raise SandboxError("network mode registries needs its network namespace")
        argv += jail
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
        # `registries`: the namespace the jail made (loopback and the proxy's forwarder).
        *(["--share-net"] if limits.network == "registries" else []),
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "reporun",
        "--clearenv",
    ]
    if status_fd is not None:
        argv += ["--json-status-fd", str(status_fd)]
    proxy = proxy_environment() if limits.network == "registries" else {}
    for name, value in job_environment({**proxy, **env}, root.env if root else None).items():
        argv += ["--setenv", name, value]
    if root is not None:
        argv += _image_binds(root.path, network=limits.network == "open")
    else:
        argv += _system_binds()
    argv += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(limits.disk),
        "--tmpfs",
        JOB_DISK,
        "--dir",
        f"{JOB_DISK}/work",
        "--perms",
        "1777",
        "--dir",
        f"{JOB_DISK}/tmp",
        "--symlink",
        f"{JOB_DISK}/work",
        JOB_HOME,
        "--symlink",
        f"{JOB_DISK}/tmp",
        "/tmp",
        "--ro-bind",
        str(workspace),
        "/src",
        *[arg for how, source, name in bring for arg in (how, source, f"{JOB_DISK}/work/{name}")],
        # bwrap's root is a tmpfs; read-only, it cannot hold files (no unbounded RAM disk).
        "--remount-ro",
        "/",
        "--chdir",
        JOB_HOME,
        "--",
        "/bin/sh",
        "-c",
        SETUP_PRELUDE if keep is not None else PRELUDE,
        "reporun",
        command,
        *([str(keep)] if keep is not None else []),
    ]
    return argv


def _brought(bring: Path | None, workspace: Path) -> list[tuple[str, str, str]]:
    """How each entry of `bring` goes into the workspace (not one the checkout has itself):
    a directory or file bound read-only, a link made again inside (bound, it would be
    followed on the host)."""
    if bring is None:
        return []
    found: list[tuple[str, str, str]] = []
    for entry in sorted(os.scandir(bring), key=lambda e: e.name):
        if os.path.lexists(workspace / entry.name):
            continue
        if entry.is_symlink():
            found.append(("--symlink", os.readlink(entry.path), entry.name))
        elif entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False):
            found.append(("--ro-bind", entry.path, entry.name))
    return found


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
        self.uids = uids if uids is not None else UidPool()
        # The network namespace of a `registries` job is made with it, as the job's uid.
        self.python = helper_python()

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
        world: World = World(),
    ) -> RunResult:
        egress = world.egress
        if limits.network == "registries" and (egress is None or self.python is None):
            raise SandboxError(
                "network mode registries needs the egress proxy and a Python every uid may run"
            )
        with contextlib.ExitStack() as stack:
            if self.root:
                uid: int | None = stack.enter_context(self.uids.take())
                nproc = limits.processes
                os.chmod(workspace, 0o755)
                if world.keep is not None and uid is not None:  # reopened as the job's uid
                    os.fchown(world.keep, uid, uid)
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
                root=world.root,
                jail=netjail_argv(self.python, egress) if egress and self.python else None,
                keep=world.keep,
                bring=_brought(world.bring, workspace),
            )
            kept = (world.keep,) if world.keep is not None else ()
            try:
                result = await run_process(
                    argv,
                    limits=limits,
                    on_output=on_output,
                    stop=stop,
                    pass_fds=(status_write, *kept),
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
    return Bubblewrap(UidPool(config.uid_base, config.uid_count))
