"""A worker's whole process tree (git, bubblewrap and the job's processes under it), killed and
waited for, so that nothing a stopped pool started is left running."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

PROC = Path("/proc")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name: state, ppid, pgrp, session..."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Running or stopped (a zombie has ended; only its parent's wait is missing)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def descendants(root: int) -> set[int]:
    """Every process under `root`, however deep, as the process table shows it now."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def kill_tree(root: int) -> set[int]:
    """SIGKILL `root`, its process group, and every process (and group) under it; the pids.
    The tree is read first: once `root` dies its children belong to init and can't be found."""
    tree = descendants(root)
    groups = {root}
    for pid in tree:
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(pid))
    groups.discard(os.getpgrp())  # never our own
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    for pid in tree | {root}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return tree


async def wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Wait until none of `pids` runs, up to `timeout`; those still running."""
    deadline = time.monotonic() + timeout
    left = {pid for pid in pids if alive(pid)}
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        left = {pid for pid in left if alive(pid)}
    return left
