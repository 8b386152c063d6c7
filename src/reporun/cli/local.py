"""A local repository named on the command line: the absolute path sent for it, and the edits
in its working tree that the job will not see."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from reporun.cli.base import fail

GIT_TIMEOUT = 5.0


def is_local(repo: str) -> bool:
    """A path rather than a URL: no scheme, and (git's rule) no `host:` before the first slash."""
    if "://" in repo or repo.startswith("-"):
        return False
    return ":" not in repo.split("/", 1)[0]


def absolute(repo: str) -> Path:
    """The directory `repo` names, absolute; a missing one is a usage error."""
    path = Path(repo).expanduser()
    if not path.exists():
        first = repo.split("/", 1)[0]
        if "/" in repo and "." in first.strip("."):  # github.com/owner/name: a URL meant
            fail(f"{repo}: no such directory (a URL needs its scheme: https://{repo})")
        fail(f"{repo}: no such directory")
    if not path.is_dir():
        fail(f"{repo}: not a directory")
    return path.resolve()


async def uncommitted(repo: str, path: Path, ref: str | None) -> str | None:
    """What to tell the user when the working tree at `path` has changes `git status` shows
    (with the user's own settings, so untracked files count only where git shows them); None
    when it is clean, is no working tree of its own, or git does not answer in time."""
    status = await _status(path)
    if status is None:
        return None
    head, branch, changed = None, None, False
    for line in status.splitlines():
        if line.startswith("# branch.oid "):
            head = line.removeprefix("# branch.oid ")
        elif line.startswith("# branch.head "):
            branch = line.removeprefix("# branch.head ")
        elif line and not line.startswith("#"):
            changed = True
    if not changed or head is None or head == "(initial)":
        return None
    if ref is not None:
        return f"{repo} has uncommitted changes; the job runs {ref} as committed"
    where = "detached HEAD" if branch in (None, "(detached)") else branch
    return f"{repo} has uncommitted changes; the job runs the last commit {head[:7]} ({where})"


async def _status(path: Path) -> str | None:
    # Only `path` itself: a directory inside a repository is not one (the server says so).
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(path.parent), "GIT_TERMINAL_PROMPT": "0"}
    try:
        process = await asyncio.create_subprocess_exec(
            "git",
            "--no-optional-locks",
            "-C",
            str(path),
            "status",
            "--porcelain=v2",
            "--branch",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
        )
    except OSError:
        return None  # no git here: the server's check speaks for the repository
    try:
        out, _ = await asyncio.wait_for(process.communicate(), GIT_TIMEOUT)
    except TimeoutError:
        return None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return out.decode(errors="replace") if process.returncode == 0 else None
