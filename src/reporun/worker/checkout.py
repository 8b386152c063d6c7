"""Repositories into workspaces, through a mirror cache per repository.

The first job on a repository clones a bare mirror; later jobs fetch into it. Each job gets the
resolved commit's files (no `.git`, nothing of the mirror) in a private directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

from reporun.errors import CheckoutError, InvalidInput
from reporun.tasks import communicate
from reporun.urlpolicy import RepoUrl, UrlPolicy, check_resolved, parse_repo_url

_FULL_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_MAX_REASON = 400


class GitFailed(CheckoutError):
    """git failed."""


class Mirrors:
    def __init__(self, root: Path, policy: UrlPolicy, *, timeout: float) -> None:
        self.root = root
        self.policy = policy
        self.timeout = timeout

    def _env(self) -> dict[str, str]:
        # Nothing of the worker's environment: no credentials, no config, no prompts.
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "LANG": "C",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_ASKPASS": "/bin/false",
            "SSH_ASKPASS": "/bin/false",
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
        }

    def policy_for(self, *, local_sources: bool) -> UrlPolicy:
        """The worker's policy for one job: local paths, file:// and loopback only for a job
        allowed them at submission (an admin's on `reporun serve`), however its host resolves
        now."""
        if local_sources or not self.policy.allow_local:
            return self.policy
        return dataclasses.replace(self.policy, allow_local=False)

    def _config(self, protocols: frozenset[str]) -> list[str]:
        options = ["protocol.allow=never", "gc.auto=0", "maintenance.auto=false"]
        options += [f"protocol.{p}.allow=always" for p in sorted(protocols)]
        options += [
            "http.followRedirects=false",
            "core.hooksPath=/dev/null",
            "fetch.fsckObjects=false",
        ]
        return [arg for option in options for arg in ("-c", option)]

    async def _git(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        protocols: frozenset[str] = frozenset(),
    ) -> str:
        """Run git; `protocols` are the transports it may use (none: it reads the mirror only)."""
        process = await asyncio.create_subprocess_exec(
            "git",
            *self._config(protocols),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**self._env(), **(env or {})},
            start_new_session=True,
        )
        try:
            out, err = await communicate(process, self.timeout)
        except TimeoutError:
            raise GitFailed(f"git {args[0]} took longer than {self.timeout:.0f} s") from None
        if process.returncode != 0:
            raise GitFailed(_last_lines(err.decode(errors="replace")) or f"git {args[0]} failed")
        return out.decode(errors="replace").strip()

    async def checkout(
        self,
        repo: str,
        ref: str | None,
        dest: Path,
        *,
        fresh_since: float | None = None,
        max_bytes: int | None = None,
        local_sources: bool = False,
        timings: dict[str, float] | None = None,
    ) -> str:
        """Put `repo` at `ref` (default branch when None) into `dest`; return the commit.

        `fresh_since` (epoch seconds, the job's submission): a fetch that started after it
        already saw every push the submitter made, so concurrent jobs share one fetch.
        `local_sources`: the job's own flag (JobSpec); without it the URL is checked, after
        resolving its host now, as a cluster checks it. `timings` gets the seconds of `fetch`
        (the URL checked, the mirror cloned or fetched when stale, the ref resolved) and of
        `checkout` (the tree's size checked, then exported into `dest`).
        """
        began = time.monotonic()
        try:
            policy = self.policy_for(local_sources=local_sources)
            url = await self._checked(repo, policy)
            mirror = self.root / (hashlib.sha256(url.url.encode()).hexdigest()[:40] + ".git")
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            async with _locked(mirror.with_suffix(".lock")):
                try:
                    if not (mirror / "HEAD").exists():
                        started = time.time()
                        await self._clone(url, mirror, policy.git_protocols)
                        _stamp(mirror, started)
                    elif await self._stale(mirror, ref, fresh_since):
                        started = time.time()
                        await self._git(
                            "--git-dir",
                            str(mirror),
                            "fetch",
                            "--prune",
                            "--quiet",
                            "origin",
                            protocols=policy.git_protocols,
                        )
                        _stamp(mirror, started)
                except GitFailed as exc:
                    raise CheckoutError(f"clone of {url.url} failed: {exc.message}") from None
                commit = await self._resolve(mirror, ref)
        finally:  # failed or not, the time it took is the fetch's
            if timings is not None:
                timings["fetch"] = time.monotonic() - began
        fetched = time.monotonic()
        if max_bytes is not None:
            await self._check_size(mirror, commit, max_bytes)
        await self._export(mirror, commit, dest)
        if timings is not None:
            timings["checkout"] = time.monotonic() - fetched
        return commit

    async def _check_size(self, mirror: Path, commit: str, max_bytes: int) -> None:
        """Refuse a tree larger than the job's disk before it lands on the worker's disk."""
        listing = await self._git("--git-dir", str(mirror), "ls-tree", "-r", "-l", "-z", commit)
        total = 0
        for entry in listing.split("\0"):
            fields = entry.split("\t", 1)[0].split()
            if len(fields) == 4 and fields[3].isdigit():
                total += int(fields[3])
        if total > max_bytes:
            raise CheckoutError(
                f"the repository's files ({total} bytes) do not fit in the disk limit ({max_bytes})"
            )

    async def _stale(self, mirror: Path, ref: str | None, fresh_since: float | None) -> bool:
        if ref and _FULL_SHA.match(ref) and await self._has_commit(mirror, ref):
            return False  # a commit never changes
        return fresh_since is None or _fetched_at(mirror) < fresh_since

    async def _checked(self, repo: str, policy: UrlPolicy) -> RepoUrl:
        try:
            url = parse_repo_url(repo, policy)
            await check_resolved(url, policy)
        except InvalidInput as exc:
            raise CheckoutError(exc.message) from None
        return url

    async def _clone(self, url: RepoUrl, mirror: Path, protocols: frozenset[str]) -> None:
        partial = mirror.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        source = url.url
        if url.scheme == "file" and not source.startswith("file://"):
            source = "file://" + source
        try:
            await self._git(
                "clone", "--mirror", "--quiet", "--", source, str(partial), protocols=protocols
            )
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(mirror)

    async def _has_commit(self, mirror: Path, sha: str) -> bool:
        try:
            await self._git("--git-dir", str(mirror), "cat-file", "-e", f"{sha}^{{commit}}")
        except GitFailed:
            return False
        return True

    async def _resolve(self, mirror: Path, ref: str | None) -> str:
        candidates = ["HEAD"] if ref is None else [f"refs/heads/{ref}", f"refs/tags/{ref}", ref]
        for candidate in candidates:
            with contextlib.suppress(GitFailed):
                return await self._git(
                    "--git-dir",
                    str(mirror),
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    "--end-of-options",
                    f"{candidate}^{{commit}}",
                )
        if ref is None:
            raise CheckoutError("the repository has no commits on its default branch")
        raise CheckoutError(f"ref {ref!r} is not a branch, tag or commit of the repository")

    async def _export(self, mirror: Path, commit: str, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        index = dest.parent / (dest.name + ".index")
        try:
            await self._git(
                "--git-dir",
                str(mirror),
                "--work-tree",
                str(dest),
                "checkout",
                "--quiet",
                commit,
                "--",
                ".",
                env={"GIT_INDEX_FILE": str(index)},
            )
        except GitFailed as exc:
            if "did not match any file" not in exc.message:
                raise CheckoutError(f"checkout of {commit} failed: {exc.message}") from None
        finally:
            index.unlink(missing_ok=True)


_STAMP = "reporun-fetch-started"


def _stamp(mirror: Path, started: float) -> None:
    (mirror / _STAMP).write_text(repr(started))


def _fetched_at(mirror: Path) -> float:
    """When the newest successful fetch into the mirror started (0 when unknown)."""
    try:
        return float((mirror / _STAMP).read_text())
    except (OSError, ValueError):
        return 0.0


@contextlib.asynccontextmanager
async def _locked(path: Path) -> AsyncIterator[None]:
    """An exclusive lock across the worker processes sharing this mirror."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _last_lines(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-3:])[:_MAX_REASON]
