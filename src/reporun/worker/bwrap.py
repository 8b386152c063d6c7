"""The bubblewrap command line of a job: what it sees of the system (the host's /usr and a few
files of /etc, or an image runtime's root), its copy of the checkout in a size-capped tmpfs, its
environment, and the chain in front (the job's uid, its network, its rlimits). worker/sandbox.py
runs it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from reporun.errors import SandboxError
from reporun.jobs import Limits
from reporun.worker.netjail import proxy_environment
from reporun.worker.runtimes import Root

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
# The same, first saying on the descriptor $2 that the sandbox is ready and the command starts
# (a byte the worker times: the sandbox's start, apart from the job's run).
MARKED_PRELUDE = (
    COPY + '{ printf . > "/proc/self/fd/$2"; } 2>/dev/null; cd "$HOME" && exec /bin/sh -c "$1"'
)
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


def etc_copies() -> dict[str, bytes]:
    """The files of ETC_FILES (through their links), read now: a job gets copies of them
    written into its sandbox's /etc, each one a write where a bind would be one more mount to
    make and take down (a dozen of them cost a job more time than any other part of its
    sandbox). Their directories are bound (`_system_binds`)."""
    copies: dict[str, bytes] = {}
    for name in ETC_FILES:
        path = Path("/etc") / name
        if path.is_file():  # a file, or a link to one
            with contextlib.suppress(OSError):
                copies[str(path)] = path.read_bytes()
    return copies


def _system_binds(copied: Sequence[tuple[int, str]]) -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    args += ["--dir", "/etc"]
    for fd, target in copied:  # read-only with the rest of the root, at the end
        args += ["--perms", "0644", "--file", str(fd), target]
    for name in ETC_FILES:
        path = Path("/etc") / name
        if path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


# What reporun mounts itself: an image's own entries of these names are not bound.
MOUNTED = frozenset({"proc", "dev", "sys", "tmp", "run", "src", "work", JOB_DISK.lstrip("/")})


def _image_binds(root: Path) -> list[str]:
    """An image runtime's root filesystem, read-only, entry by entry (its /etc whole: the
    image's, holding nothing of the host's)."""
    args: list[str] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name in MOUNTED:
            continue
        target = f"/{entry.name}"
        if entry.is_symlink():
            args += ["--symlink", os.readlink(entry.path), target]
        elif entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False):
            args += ["--ro-bind", entry.path, target]
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
    mark: int | None = None,
    bring: Sequence[tuple[str, str, str]] = (),
    before: Sequence[str] = (),
    data: Sequence[tuple[int, str]] = (),
    copied: Sequence[tuple[int, str]] = (),
    seccomp_fd: int | None = None,
) -> list[str]:
    """The whole command line: what runs as root first (`before`), drop to the job's uid,
    make its network (`jail`, for modes `registries` and `open`), set rlimits, enter
    bubblewrap (`data`: files made from what a descriptor holds, and where they go, each
    bound; `copied`: the same for the host's /etc files, written into its root, see
    `etc_copies`)."""
    if keep is not None:
        prelude, extra = SETUP_PRELUDE, [str(keep)]
    elif mark is not None:
        prelude, extra = MARKED_PRELUDE, [str(mark)]
    else:
        prelude, extra = PRELUDE, []
    argv: list[str] = [*before]
    if uid is not None:
        # A program to start, yet cheaper than Popen(user=...): that makes Python fork the
        # whole worker (no vfork when the child changes its uid), 3 ms more a job (measured).
        argv += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    networked = limits.network in ("registries", "open")
    if networked:
        if jail is None:
            raise SandboxError(f"network mode {limits.network} needs its network namespace")
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
        # A user namespace of its own, and none further inside (each would give the job
        # CAP_NET_ADMIN and the kernel's namespaced code to attack).
        "--unshare-user",
        "--disable-userns",
        # The namespace the jail made: loopback and the proxy's forwarder (`registries`), or
        # loopback and the tap of slirp4netns (`open`).
        *(["--share-net"] if networked else []),
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "reporun",
        "--clearenv",
    ]
    if status_fd is not None:
        argv += ["--json-status-fd", str(status_fd)]
    if seccomp_fd is not None:  # worker/seccomp.py: the socket families a job may have
        argv += ["--seccomp", str(seccomp_fd)]
    proxy = proxy_environment() if limits.network == "registries" else {}
    for name, value in job_environment({**proxy, **env}, root.env if root else None).items():
        argv += ["--setenv", name, value]
    if root is not None:
        argv += _image_binds(root.path)
    else:
        argv += _system_binds(copied)
    for fd, path in data:
        argv += ["--ro-bind-data", str(fd), path]
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
        prelude,
        "reporun",
        command,
        *extra,
    ]
    return argv


def brought(bring: Path | None, workspace: Path) -> list[tuple[str, str, str]]:
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
