"""Local repositories, which `reporun serve` accepts: checked at submission, so a path that is no
directory, no git repository or one with no commits is refused at once in plain words instead
of failing later in git's ("Could not read from remote repository")."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from reporun.errors import RepoUnusable
from reporun.tasks import communicate

GIT_TIMEOUT = 10.0
# Read-only questions to a repository the server does not own: no hooks, no fsmonitor command,
# nothing of the user's or the system's configuration, never a prompt.
_GIT_CONFIG = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")


def local_path(url: str) -> Path:
    """The path of a local repository URL as the URL policy normalized it (`/p` or `file:///p`)."""
    return Path(url.removeprefix("file://"))


async def check_local_repo(
    path: Path, *, ref: str | None = None, timeout: float = GIT_TIMEOUT
) -> None:
    """RepoUnusable unless `path` is a git repository (its top directory or a bare one) with a
    commit at HEAD (with a `ref`, any commit: the worker resolves the ref)."""
    try:
        info, real = await asyncio.to_thread(_inspect, path)
    except (FileNotFoundError, NotADirectoryError):
        raise RepoUnusable(f"repo {path}: no such directory") from None
    except OSError as exc:
        raise RepoUnusable(f"repo {path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise RepoUnusable(f"repo {path} is not a directory")

    # git looks in `path` itself only, not in the directories above it, as a clone does.
    alone = {"GIT_CEILING_DIRECTORIES": str(real.parent)}
    code, _, err = await _git(path, timeout, "rev-parse", "--absolute-git-dir", env=alone)
    if code != 0:
        if "dubious ownership" in err:
            raise RepoUnusable(
                f"repo {path} belongs to another user, and git refuses it (see git's "
                "safe.directory)"
            )
        if "not a git repository" not in err:
            raise RepoUnusable(f"repo {path}: git says: {_last_line(err)}")
        code, top, _ = await _git(path, timeout, "rev-parse", "--show-toplevel")
        if code == 0 and top:
            raise RepoUnusable(f"repo {path} is not a git repository; it is inside {top}")
        raise RepoUnusable(f"repo {path} is not a git repository")
    if ref is None:
        code, _, _ = await _git(
            path, timeout, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", env=alone
        )
        if code == 0:
            return
    _, refs, _ = await _git(
        path, timeout, "for-each-ref", "--count=1", "refs/heads", "refs/tags", env=alone
    )
    if not refs:
        raise RepoUnusable(f"repo {path} has no commits yet")
    if ref is None:
        raise RepoUnusable(f"repo {path}: its current branch has no commits yet; name a ref")


def _inspect(path: Path) -> tuple[os.stat_result, Path]:
    return os.stat(path), path.resolve()


async def _git(
    path: Path, timeout: float, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "git",
        *_GIT_CONFIG,
        "-C",
        str(path),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**_env(), **(env or {})},
        start_new_session=True,
    )
    try:
        out, err = await communicate(process, timeout)
    except TimeoutError:
        raise RepoUnusable(f"repo {path}: git did not answer in {timeout:.0f} s") from None
    text = out.decode(errors="replace").strip()
    return process.returncode or 0, text, err.decode(errors="replace")


def _env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.devnull,
        "LANG": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_OPTIONAL_LOCKS": "0",
    }


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "it failed"
