"""The root filesystems of a worker's image runtimes, each prepared once per image digest
(worker/images.py fetches and unpacks one) under `<runtimes dir>/<digest>/`.

Workers of one host that share the directory take turns: a file lock per digest lets one
prepare it while the others wait, and a root is put in place whole (rename) or not at all.
A reference's digest is looked up again after `refresh` seconds, so a tag that moves (a new
`python:3.12-slim`) reaches new jobs without a restart. When a look-up or a preparation fails
(the registry is down), jobs run in the root last prepared for that reference; with none, the
failure is remembered for `retry_after` seconds, so a queue of jobs does not each wait for it.
Roots no job used for `keep_days` days are removed, under their lock, which every job running
in a root holds shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from reporun.runtimes import Runtime
from reporun.worker.images import Inspected, RuntimeUnavailable, inspect, parse_env, unpack
from reporun.worker.places import (
    TRASH,
    Hold,
    discard,
    flock,
    open_lock,
    owned_dir,
    remove,
    set_aside,
    try_lock,
)
from reporun.worker.workdir import prepare_work_dir

__all__ = ["Root", "RootStore", "RuntimeUnavailable"]

logger = logging.getLogger("reporun.worker")

READY = "ready"


@dataclass(frozen=True, slots=True)
class Root:
    """A prepared root filesystem, what the sandbox binds as the job's `/`."""

    runtime: str
    digest: str
    path: Path
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None


class Held(Hold):
    """A root a job runs in, its lock held shared meanwhile: nothing removes it until
    `release`."""

    def __init__(self, root: Root, fd: int) -> None:
        super().__init__(fd)
        self.root = root


class RootStore:
    """The roots of one worker host, under `directory`."""

    def __init__(
        self,
        directory: Path,
        *,
        refresh: float = 600.0,
        keep_days: float = 14.0,
        retry_after: float = 15.0,
    ) -> None:
        self.directory = directory
        self.refresh = refresh
        self.keep_days = keep_days
        self.retry_after = retry_after
        self._looked_up: dict[str, tuple[float, Inspected]] = {}  # by image reference
        self._failed: dict[str, tuple[float, str]] = {}  # by image reference
        self._last: dict[str, Path] = {}  # by image reference: the place last made ready
        self._roots: dict[Path, Root] = {}  # by place, once read from its config.json
        self._lock = asyncio.Lock()

    def check(self) -> None:
        """Create the directory, or refuse (ConfigError) one another user owns or may write."""
        prepare_work_dir(self.directory, setting="REPORUN_RUNTIMES_DIR")

    def _place(self, digest: str) -> Path:
        return self.directory / digest.replace(":", "-")

    def _ready(self, place: Path) -> bool:
        ready = place / READY
        return (
            owned_dir(place)
            and owned_dir(place / "rootfs")
            and not ready.is_symlink()
            and ready.is_file()
        )

    async def prepare(self, runtime: Runtime) -> Root | None:
        """The root of `runtime`, prepared if it is not yet (None for `host`);
        RuntimeUnavailable with one line when there is none to run in."""
        if runtime.image is None:
            return None
        image = runtime.image
        async with self._lock:  # one preparation at a time in this worker
            try:
                looked_up = await self._look_up(image)
                place = self._place(looked_up.digest)
                if not self._ready(place):
                    await self._prepare(runtime, looked_up, place)
                self._last[image] = place
            except RuntimeUnavailable as exc:
                now = time.monotonic()
                last = self._failed.get(image)
                if last is None or now - last[0] >= self.retry_after:  # a new failure
                    self._failed[image] = (now, exc.message)
                self._looked_up.pop(image, None)
                fallback = await asyncio.to_thread(self._last_ready, image)
                if fallback is None:
                    raise
                logger.warning(
                    f"runtime {runtime.name}: {exc.message}; running in the root prepared last",
                    extra={"action": "runtime_fallback", "runtime": runtime.name},
                )
                place = fallback
            return self._root(runtime, place)

    async def hold(self, runtime: Runtime) -> Held | None:
        """The root of `runtime` (`prepare`), held for a job's run (None for `host`)."""
        for _ in range(2):  # once more if it was removed between the two
            root = await self.prepare(runtime)
            if root is None:
                return None
            place = root.path.parent
            fd = open_lock(self.directory / f"{place.name}.lock")
            try:
                await flock(fd, fcntl.LOCK_SH)
                if self._ready(place):
                    os.utime(place / READY)  # in use: not stale for keep_days more
                    return Held(root, fd)
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
            self._roots.pop(place, None)
        raise RuntimeUnavailable(f"the root of {runtime.name} was removed meanwhile; try again")

    def _root(self, runtime: Runtime, place: Path) -> Root:
        known = self._roots.get(place)
        if known is None or known.runtime != runtime.name:
            config = json.loads((place / "config.json").read_text())
            workdir = config.get("WorkingDir")
            known = self._roots[place] = Root(
                runtime=runtime.name,
                digest=str(config["digest"]),
                path=place / "rootfs",
                env=parse_env(config.get("Env")),
                workdir=workdir if isinstance(workdir, str) and workdir else None,
            )
        return known

    def _last_ready(self, image: str) -> Path | None:
        """The place last made ready for `image`: this worker's memory, else the directory's
        newest root of that reference."""
        known = self._last.get(image)
        if known is not None and self._ready(known):
            return known
        found: list[tuple[float, Path]] = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.directory):
                place = Path(entry.path)
                if entry.name.startswith(".") or not self._ready(place):
                    continue
                with contextlib.suppress(OSError, ValueError):
                    if json.loads((place / "config.json").read_text()).get("image") == image:
                        found.append(((place / READY).stat().st_mtime, place))
        return max(found)[1] if found else None

    async def status(self, runtime: Runtime) -> tuple[str, bool]:
        """The image's digest now, and whether its root is prepared; nothing is created
        (`reporun doctor`). RuntimeUnavailable when the image cannot be looked up."""
        assert runtime.image is not None
        digest = (await inspect(runtime.image)).digest
        return digest, self._ready(self._place(digest))

    async def _look_up(self, image: str) -> Inspected:
        now = time.monotonic()
        failed = self._failed.get(image)
        if failed is not None and now - failed[0] < self.retry_after:
            raise RuntimeUnavailable(failed[1])
        known = self._looked_up.get(image)
        if known is not None and now - known[0] < self.refresh:
            return known[1]
        found = await inspect(image)
        self._failed.pop(image, None)
        self._looked_up[image] = (now, found)
        return found

    async def _prepare(self, runtime: Runtime, looked_up: Inspected, place: Path) -> None:
        assert runtime.image is not None
        self.check()
        lock = open_lock(self.directory / f"{place.name}.lock")
        try:
            await flock(lock, fcntl.LOCK_EX)
            if self._ready(place):  # another worker of this host made it
                return
            began = time.monotonic()
            scratch = self.directory / f".{place.name}.{os.getpid()}.{secrets.token_hex(4)}"
            os.mkdir(scratch, 0o711)
            try:
                await unpack(runtime.image, looked_up, scratch)
                (scratch / READY).write_text(looked_up.digest + "\n")
                if os.path.lexists(place):  # a leftover that is not a ready root
                    await asyncio.to_thread(discard, place)
                os.rename(scratch, place)
            finally:
                await asyncio.to_thread(shutil.rmtree, scratch, True)
            logger.info(
                f"runtime {runtime.name} prepared ({looked_up.digest[:19]})",
                extra={
                    "action": "runtime_prepared",
                    "runtime": runtime.name,
                    "digest": looked_up.digest,
                    "seconds": round(time.monotonic() - began, 3),
                },
            )
        finally:
            os.close(lock)  # lets the lock go
        await self.tidy(keep=place)

    async def tidy(self, *, keep: Path | None = None) -> None:
        """Remove roots no job used for `keep_days`, and what crashed preparations left."""
        if self.directory.is_dir():
            await asyncio.to_thread(self._tidy, keep)

    def _tidy(self, keep: Path | None) -> None:
        cutoff = time.time() - self.keep_days * 86400
        for entry in os.scandir(self.directory):
            path, name = Path(entry.path), entry.name
            if name.endswith(".lock") or not entry.is_dir(follow_symlinks=False) or path == keep:
                continue
            if name.startswith(TRASH):
                shutil.rmtree(path, ignore_errors=True)
                continue
            # A preparation's scratch is `.<place>.<pid>.<token>`, written under <place>.lock:
            # left behind by a crash when nobody holds that lock.
            scratch = name.startswith(".")
            place = name[1:].split(".")[0] if scratch else name
            if not scratch and not self._stale(path, cutoff):
                continue
            with try_lock(self.directory / f"{place}.lock") as mine:
                # Looked at again under the lock: a job may have just used it.
                if not mine or not (scratch or self._stale(path, cutoff)):
                    continue
                trash = set_aside(path)
            remove(trash)
            logger.info(
                f"runtime root {name} removed",
                extra={"action": "runtime_removed", "digest": place},
            )

    @staticmethod
    def _stale(place: Path, cutoff: float) -> bool:
        try:
            return (place / READY).stat().st_mtime < cutoff
        except FileNotFoundError:
            with contextlib.suppress(FileNotFoundError):
                return place.stat().st_mtime < cutoff
            return False
