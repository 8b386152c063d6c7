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
import contextlib
import fcntl
import fnmatch
import hashlib
import io
import json
import logging
import os
import secrets
import shlex
import shutil
import stat
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from reporun.worker.places import Hold, discard, flock, open_lock, owned_dir, try_lock
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
HASHED_MAX = 16 * 1024 * 1024
CHUNK = 64 * 1024
ENTRIES_MAX = 500_000
# Long names and PAX headers are read whole: none longer than this.
HEADER_MAX = 64 * 1024
LONG_HEADERS = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)  # a bigger file named by the command counts by its size alone
READY = "ready"
KEPT = "kept"


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


def setup_key(
    *,
    repo: str,
    runtime_digest: str | None,
    setup: str,
    env: Mapping[str, str],
    workspace: Path,
) -> str:
    """What decides whether an earlier job's setup result serves this one: the repository,
    the runtime's image, the command, the job's variables, and the files that pin what it
    installs."""
    names = {
        entry
        for entry in os.listdir(workspace)
        if any(fnmatch.fnmatch(entry, p) for p in LOCK_FILES)
    }
    try:
        words = shlex.split(setup)
    except ValueError:
        words = setup.split()
    for word in words:  # `pip install -r requirements/dev.txt` (or -rdev.txt): that file too
        if word.startswith("--") and "=" in word:
            word = word.partition("=")[2]
        elif word.startswith("-") and len(word) > 2 and word[1] in "rc":
            word = word[2:]
        if not word.startswith(("-", "/")) and ".." not in Path(word).parts and len(word) < 256:
            names.add(word)
    digest = hashlib.sha256(
        json.dumps([repo, runtime_digest or "host", setup, sorted(env.items())]).encode()
    )
    for name in sorted(names):
        found = _digest_of(workspace, name)
        if found is not None:
            digest.update(f"{name}\0{found}\0".encode())
    return digest.hexdigest()


class Kept(Hold):
    """A kept setup result a job uses (its lock held shared): the directory of its entries.
    `only_now`: too big for the cache, it serves this job alone (then `SetupCache.discard`
    its directory's parent)."""

    def __init__(self, path: Path, fd: int, size: int, *, only_now: bool = False) -> None:
        super().__init__(fd)
        self.path = path
        self.size = size
        self.only_now = only_now


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
        """A new directory for a setup phase's results (`KEPT` inside it), this user's."""
        prepare_work_dir(self.directory, setting="REPORUN_SETUP_CACHE_DIR")
        owner_dir = self._owner_dir(owner)
        prepare_work_dir(owner_dir, setting="REPORUN_SETUP_CACHE_DIR")
        scratch = owner_dir / f".{key}.{os.getpid()}.{secrets.token_hex(4)}"
        os.mkdir(scratch, 0o711)
        _mkdir(scratch / KEPT)
        return scratch

    async def keep(self, owner: str, key: str, scratch: Path, size: int) -> Kept | None:
        """Put a setup phase's results (received into `scratch`) in place, held for the job's
        command; None when it made nothing. More than the cache may hold serves this job only."""
        if not os.listdir(scratch / KEPT):
            await self.discard(scratch)
            return None
        if size > self.max_bytes:
            return Kept(scratch / KEPT, os.open(scratch, os.O_RDONLY), size, only_now=True)
        place = scratch.parent / key
        (scratch / READY).write_text(json.dumps({"bytes": size, "at": time.time()}))
        fd = open_lock(scratch.parent / f"{key}.lock")
        try:
            await flock(fd, fcntl.LOCK_EX)
            if self._ready(place):  # another worker of this host kept it first
                await self.discard(scratch)
            else:
                if os.path.lexists(place):
                    await asyncio.to_thread(discard, place)
                os.rename(scratch, place)
            # Held from here on (flock changes a lock by letting it go: look again).
            await flock(fd, fcntl.LOCK_SH)
            if not self._ready(place):
                os.close(fd)
                return None
            os.utime(place / READY)
        except BaseException:
            os.close(fd)
            raise
        kept = Kept(place / KEPT, fd, size)
        try:
            await asyncio.to_thread(self._evict)
        except BaseException:
            kept.release()
            raise
        return kept

    async def tidy(self) -> None:
        """Remove what crashed preparations left: scratch and trash older than a day."""
        if self.directory.is_dir():
            await asyncio.to_thread(self._tidy)

    def _tidy(self) -> None:
        cutoff = time.time() - 86400
        for owner_dir in self.directory.iterdir():
            if not owner_dir.is_dir() or owner_dir.is_symlink():
                continue
            for entry in owner_dir.iterdir():
                if entry.name.startswith(".") and not entry.is_symlink() and entry.is_dir():
                    with contextlib.suppress(OSError):
                        if entry.stat().st_mtime < cutoff:
                            shutil.rmtree(entry, ignore_errors=True)

    async def discard(self, scratch: Path) -> None:
        await asyncio.to_thread(shutil.rmtree, scratch, True)

    def _evict(self) -> None:
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
            with try_lock(place.with_name(f"{place.name}.lock")) as mine:
                if not mine or not self._ready(place):  # in use, or gone already
                    continue
                with contextlib.suppress(OSError):
                    discard(place)
            total -= size
            logger.info(
                "a kept setup result removed", extra={"action": "setup_evicted", "bytes": size}
            )


class NotKept(Exception):
    """What a setup phase sent to keep could not be (too big, or not a plain archive)."""


class _Capped(io.RawIOBase):
    """A pipe's reader that gives out at most `limit` bytes."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd, self.left = fd, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = os.read(self.fd, min(len(buffer), CHUNK))
        self.left -= len(data)
        if self.left < 0:
            raise NotKept("what setup made is larger than twice the job's disk limit")
        buffer[: len(data)] = data
        return len(data)


def _parts(name: str) -> tuple[str, ...]:
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or any(p in ("..", ".") for p in parts):
        raise NotKept(f"{name[:100]!r} is not a name inside the workspace")
    return parts


class _Member(tarfile.TarInfo):
    """A member whose long-name or PAX header, read whole into memory by tarfile, is small."""

    def _proc_member(self, tar: tarfile.TarFile) -> Any:
        if self.type in LONG_HEADERS and self.size > HEADER_MAX:
            raise NotKept(f"what setup made has a header of {self.size} bytes")
        return super()._proc_member(tar)  # type: ignore[misc]


def _mkdir(path: Path) -> None:
    os.mkdir(path, 0o700)
    os.chmod(path, 0o755)  # whatever the umask: the next jobs' uids read it


def receive(fd: int, into: Path, *, max_bytes: int, max_entries: int = ENTRIES_MAX) -> int:
    """Unpack the archive a setup phase writes to `fd` (closed at the end) into `into` (an
    empty directory of this user's), trusting nothing of it: names stay inside, no link is
    followed (a member whose parent is not a directory made here is refused), only
    directories, files and links are made, as this user's, readable by all, nothing set-id
    or writable by others. The bytes of its files; NotKept when it is too big or malformed."""
    made = {into}
    written = 0
    try:
        stream = io.BufferedReader(_Capped(fd, max_bytes))
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=_Member) as tar:
            for count, member in enumerate(tar, 1):
                tar.members.clear()  # type: ignore[attr-defined]  # a stream's: not needed again
                if count > max_entries:
                    raise NotKept(f"what setup made has more than {max_entries} entries")
                if member.sparse is not None or written + member.size > max_bytes:
                    raise NotKept("what setup made is larger than twice the job's disk limit")
                parts = _parts(member.name)
                target = into.joinpath(*parts)
                parent = into
                for part in parts[:-1]:  # every directory on the way one made here
                    parent = parent / part
                    if parent not in made:
                        _mkdir(parent)
                        made.add(parent)
                if member.isdir():
                    if target not in made:
                        _mkdir(target)
                        made.add(target)
                elif member.isfile():
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                    out = os.open(target, flags, 0o600)
                    # Readable by all; runnable by all if its owner could run it.
                    os.fchmod(out, 0o755 if member.mode & 0o100 else 0o644)
                    with os.fdopen(out, "wb") as file:
                        source = tar.extractfile(member)
                        assert source is not None
                        shutil.copyfileobj(source, file, CHUNK)
                    written += member.size
                elif member.issym():
                    os.symlink(member.linkname, target)
                elif member.islnk():
                    source_path = into.joinpath(*_parts(member.linkname))
                    info = os.lstat(source_path)
                    if not stat.S_ISREG(info.st_mode) or source_path.parent not in made:
                        raise NotKept(f"{member.name[:100]!r} links to what is not a file of it")
                    os.link(source_path, target, follow_symlinks=False)
                # Devices, fifos and the like are not kept.
    except tarfile.ReadError as exc:
        if written == 0 and "empty" in str(exc):
            return 0  # nothing to keep
        raise NotKept(f"what setup made is not a plain archive ({exc})") from None
    except NotKept:
        raise
    except Exception as exc:  # an archive's surprises (a NUL in a name...) are the job's
        raise NotKept(f"what setup made could not be kept ({type(exc).__name__}: {exc})") from None
    finally:
        with contextlib.suppress(OSError):
            while os.read(fd, CHUNK):  # let the writer finish, whatever is left is dropped
                pass
        os.close(fd)
    return written
