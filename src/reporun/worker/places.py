"""Directories of things a worker prepares once and jobs then use (runtime roots, kept setup
results), each entry under a lock file of its own: taken exclusively to make or remove it,
shared while a job uses it. Waits are polled, so a cancelled job leaves no thread behind."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

LOCK_POLL = 0.2
# What is being deleted is first renamed to this prefix, so it is gone from its place at once.
TRASH = ".trash-"


def set_aside(path: Path) -> Path:
    """Rename `path` to a trash name beside it (under its lock): its place is free at once."""
    trash = path.with_name(f"{TRASH}{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    os.rename(path, trash)
    return trash


def remove(path: Path) -> None:
    """Delete what `set_aside` moved (a link or a file is unlinked, not followed)."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def discard(path: Path) -> None:
    remove(set_aside(path))


def owned_dir(path: Path) -> bool:
    """A real directory (not a link) of this user that nobody else may write."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022


def open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


async def flock(fd: int, kind: int) -> None:
    """`kind` (LOCK_EX, LOCK_SH) on `fd`, polled: a cancelled wait leaves no thread behind."""
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            await asyncio.sleep(LOCK_POLL)


class Hold:
    """A lock held (shared, by a job using what it guards) until `release`."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """The lock at `path` if nobody holds it (True), else False at once."""
    fd = open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)
