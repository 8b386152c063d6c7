"""A job's setup phase, and what it leaves for the next jobs of its project.

A job with a `setup` command runs it first, in a sandbox like its command's but with network
`registries`. What it adds at the top of the workspace (a .venv, node_modules, target/) is kept
on this worker host, per owner, under a key of the runtime's digest, the setup command and the
hashes of the lock files the repository has (requirements*.txt, poetry.lock,
package-lock.json, ... and any file the command names). The command then runs with network
`none`, those entries bound read-only into its workspace; so do later jobs with the same key,
which skip the setup. Kept results are removed oldest-used first past `max_bytes`.
"""

from __future__ import annotations

import asyncio
import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import secrets
import shlex
import shutil
import stat
import time
from pathlib import Path

from reporun.worker.images import strip
from reporun.worker.places import Hold, flock, open_lock, owned_dir, try_lock
from reporun.worker.workdir import prepare_work_dir

logger = logging.getLogger("reporun.worker")

# What a repository's dependencies are pinned by, in the languages reporun's users run.
LOCK_FILES = (
    "requirements*.txt",
    "constraints*.txt",
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "poetry.lock",
    "Pipfile",
    "Pipfile.lock",
    "uv.lock",
    "package.json",
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "Cargo.toml",
    "Cargo.lock",
    "go.mod",
    "go.sum",
    "Gemfile",
    "Gemfile.lock",
)
HASHED_MAX = 16 * 1024 * 1024  # a bigger file named by the command counts by its size alone
READY = "ready"
KEPT = "kept"
TRASH = ".trash-"


def _digest_of(workspace: Path, name: str) -> str | None:
    """The sha256 of a regular file of the checkout (nothing outside it, through a link or
    otherwise), else None."""
    path = workspace / name
    try:
        if not path.resolve().is_relative_to(workspace.resolve()):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except (OSError, RuntimeError):
        return None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None
        if info.st_size > HASHED_MAX:
            return f"size:{info.st_size}"
        return hashlib.sha256(file.read()).hexdigest()


def setup_key(*, runtime_digest: str | None, setup: str, workspace: Path) -> str:
    """What decides whether an earlier job's setup result serves this one."""
    names = {
        entry
        for entry in os.listdir(workspace)
        if any(fnmatch.fnmatch(entry, p) for p in LOCK_FILES)
    }
    try:
        words = shlex.split(setup)
    except ValueError:
        words = setup.split()
    for word in words:  # `pip install -r requirements/dev.txt`: that file too
        if not word.startswith(("-", "/")) and ".." not in Path(word).parts and len(word) < 256:
            names.add(word)
    digest = hashlib.sha256(f"{runtime_digest or 'host'}\0{setup}\0".encode())
    for name in sorted(names):
        found = _digest_of(workspace, name)
        if found is not None:
            digest.update(f"{name}\0{found}\0".encode())
    return digest.hexdigest()


class Kept(Hold):
    """A kept setup result a job uses (its lock held shared): the directory of its entries."""

    def __init__(self, path: Path, fd: int, size: int) -> None:
        super().__init__(fd)
        self.path = path
        self.size = size


class SetupCache:
    """The setup results kept on this worker host, under `directory/<owner>/<key>/`."""

    def __init__(self, directory: Path, *, max_bytes: int = 10 * 1024**3) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def _owner_dir(self, owner: str) -> Path:
        return self.directory / hashlib.sha256(owner.encode()).hexdigest()[:24]

    def _ready(self, place: Path) -> bool:
        ready = place / READY
        return owned_dir(place) and owned_dir(place / KEPT) and ready.is_file()

    async def find(self, owner: str, key: str) -> Kept | None:
        """The result kept for this owner and key, held; None when there is none."""
        place = self._owner_dir(owner) / key
        if not self._ready(place):
            return None
        fd = open_lock(place.with_name(f"{key}.lock"))
        try:
            await flock(fd, fcntl.LOCK_SH)
            if not self._ready(place):  # removed meanwhile
                os.close(fd)
                return None
            os.utime(place / READY)
            size = int(json.loads((place / READY).read_text()).get("bytes", 0))
        except BaseException:
            os.close(fd)
            raise
        return Kept(place / KEPT, fd, size)

    def staging(self, owner: str, key: str) -> Path:
        """A new directory for a setup phase to keep its results in (`KEPT` inside it)."""
        prepare_work_dir(self.directory, setting="REPORUN_SETUP_CACHE_DIR")
        owner_dir = self._owner_dir(owner)
        prepare_work_dir(owner_dir, setting="REPORUN_SETUP_CACHE_DIR")
        scratch = owner_dir / f".{key}.{os.getpid()}.{secrets.token_hex(4)}"
        os.mkdir(scratch, 0o711)
        os.mkdir(scratch / KEPT, 0o700)
        return scratch

    async def keep(self, owner: str, key: str, scratch: Path) -> Kept | None:
        """Put a setup phase's results in place (made this user's, readable by all, and
        stripped as an image's root is), held for the job's command; None when nothing was
        kept or the disk allows none."""
        size = await asyncio.to_thread(_adopt, scratch / KEPT)
        if size > self.max_bytes or not os.listdir(scratch / KEPT):
            await self.discard(scratch)
            return None
        place = scratch.parent / key
        (scratch / READY).write_text(json.dumps({"bytes": size, "at": time.time()}))
        fd = open_lock(scratch.parent / f"{key}.lock")
        try:
            await flock(fd, fcntl.LOCK_EX)
            if self._ready(place):  # another worker of this host kept it first
                await self.discard(scratch)
            else:
                if os.path.lexists(place):
                    await asyncio.to_thread(_discard, place)
                os.rename(scratch, place)
        finally:
            os.close(fd)
        await asyncio.to_thread(self._evict, keep=place)
        return await self.find(owner, key)

    async def discard(self, scratch: Path) -> None:
        await asyncio.to_thread(shutil.rmtree, scratch, True)

    def _evict(self, *, keep: Path) -> None:
        """Remove results, oldest-used first, until those left fit in max_bytes."""
        entries: list[tuple[float, int, Path]] = []
        for owner_dir in self.directory.iterdir():
            if not owner_dir.is_dir() or owner_dir.is_symlink():
                continue
            for place in owner_dir.iterdir():
                if place.name.startswith(".") or place.name.endswith(".lock"):
                    continue
                try:
                    info = json.loads((place / READY).read_text())
                    used = (place / READY).stat().st_mtime
                except (OSError, ValueError):
                    continue
                entries.append((used, int(info.get("bytes", 0)), place))
        total = sum(size for _, size, _ in entries)
        for _, size, place in sorted(entries):
            if total <= self.max_bytes:
                break
            if place == keep:
                continue
            with try_lock(place.with_name(f"{place.name}.lock")) as mine:
                if not mine:  # a job is using it
                    continue
                _discard(place)
            total -= size
            logger.info(
                "a kept setup result removed", extra={"action": "setup_evicted", "bytes": size}
            )


def _adopt(kept: Path) -> int:
    """What a job's uid wrote, made this user's and stripped; its size in bytes."""
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        for top, dirs, files in os.walk(kept):
            for name in (*dirs, *files):
                os.lchown(os.path.join(top, name), uid, gid)
        os.lchown(kept, uid, gid)
    size = strip(kept, readable=True)
    os.chmod(kept, 0o755)
    return size


def _discard(path: Path) -> None:
    trash = path.with_name(f"{TRASH}{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)
