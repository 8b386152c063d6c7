"""The root filesystems of a worker's image runtimes, each prepared once per image digest.

An image is fetched with skopeo (`docker://` from a registry, `oci-archive:` and `oci:` from
disk) into an OCI layout and unpacked with `umoci raw unpack --rootless` (no root needed, no
daemon), into `<runtimes dir>/<digest>/rootfs`, beside the image's config (its `Env` and
`WorkingDir`). Workers on one host share the directory: a file lock lets one prepare a digest
while the others wait, and a root is put in place whole (rename) or not at all.

A reference's digest is looked up again after `refresh` seconds, so a tag that moves (a new
`python:3.12-slim`) reaches new jobs without a restart; roots no job used for `keep` days
are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from reporun.errors import SandboxError
from reporun.runtimes import Runtime

logger = logging.getLogger("reporun.worker")

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
PREPARE_TIMEOUT = 900.0
INSPECT_TIMEOUT = 120.0
READY = "ready"


class RuntimeUnavailable(SandboxError):
    """An image runtime could not be prepared (the registry, the image, the disk)."""


@dataclass(frozen=True, slots=True)
class Root:
    """A prepared root filesystem, what the sandbox binds as the job's `/`."""

    runtime: str
    digest: str
    path: Path
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None


async def _run(*argv: str, timeout: float) -> bytes:
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise RuntimeUnavailable(
            f"{argv[0]} is not installed (Debian: apt-get install skopeo umoci)"
        ) from None
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except BaseException as exc:  # a timeout, or the job cancelled: the tool goes too
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.shield(process.wait())
        if isinstance(exc, TimeoutError):
            raise RuntimeUnavailable(
                f"{argv[0]} {argv[1]} took more than {timeout:.0f} s"
            ) from None
        raise
    if process.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise RuntimeUnavailable(f"{argv[0]} {argv[1]} failed: {last[0][:300]}")
    return out


def _parse_env(entries: object) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in entries if isinstance(entries, list) else []:
        name, sep, value = str(entry).partition("=")
        if sep and name:
            env[name] = value
    return env


class RootStore:
    """The roots of one worker host, under `directory`."""

    def __init__(self, directory: Path, *, refresh: float = 600.0, keep_days: float = 14.0) -> None:
        self.directory = directory
        self.refresh = refresh
        self.keep_days = keep_days
        self._digests: dict[str, tuple[float, str]] = {}
        self._roots: dict[str, Root] = {}  # by digest, once read from its config.json
        self._lock = asyncio.Lock()

    async def prepare(self, runtime: Runtime) -> Root | None:
        """The root of `runtime`, prepared if it is not yet (None for `host`);
        RuntimeUnavailable with one line when it cannot be."""
        if runtime.image is None:
            return None
        async with self._lock:  # one preparation at a time in this worker
            digest = await self._digest(runtime.image)
            place = self.directory / digest.replace(":", "-")
            if not (place / READY).is_file():
                self._roots.pop(digest, None)
                await self._prepare(runtime, digest, place)
            os.utime(place / READY)  # in use: not removed as stale
            known = self._roots.get(digest)
            if known is None or known.runtime != runtime.name:
                config = json.loads((place / "config.json").read_text())
                known = self._roots[digest] = Root(
                    runtime=runtime.name,
                    digest=digest,
                    path=place / "rootfs",
                    env=_parse_env(config.get("Env")),
                    workdir=config.get("WorkingDir") or None,
                )
            return known

    async def status(self, runtime: Runtime) -> tuple[str, bool]:
        """The image's digest now, and whether its root is prepared; nothing is created
        (`reporun doctor`). RuntimeUnavailable when the image cannot be looked up."""
        assert runtime.image is not None
        digest = await self._digest(runtime.image)
        return digest, (self.directory / digest.replace(":", "-") / READY).is_file()

    async def _digest(self, image: str) -> str:
        known = self._digests.get(image)
        if known is not None and time.monotonic() - known[0] < self.refresh:
            return known[1]
        raw = await _run("skopeo", "inspect", "--no-tags", image, timeout=INSPECT_TIMEOUT)
        try:
            digest = str(json.loads(raw)["Digest"])
        except (ValueError, KeyError, TypeError):
            raise RuntimeUnavailable(f"skopeo inspect gave no digest for {image}") from None
        if not DIGEST.match(digest):
            raise RuntimeUnavailable(f"{image} has an unexpected digest {digest[:80]!r}")
        self._digests[image] = (time.monotonic(), digest)
        return digest

    async def _prepare(self, runtime: Runtime, digest: str, place: Path) -> None:
        assert runtime.image is not None
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        lock_path = self.directory / f"{place.name}.lock"
        with lock_path.open("w") as lock:
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
            try:
                if (place / READY).is_file():  # another worker of this host made it
                    return
                began = time.monotonic()
                scratch = self.directory / f".{place.name}.{os.getpid()}"
                shutil.rmtree(scratch, ignore_errors=True)
                scratch.mkdir(mode=0o755)
                try:
                    await self._unpack(runtime.image, digest, scratch)
                    shutil.rmtree(place, ignore_errors=True)
                    scratch.rename(place)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
                logger.info(
                    f"runtime {runtime.name} prepared ({digest[:19]})",
                    extra={
                        "action": "runtime_prepared",
                        "runtime": runtime.name,
                        "digest": digest,
                        "seconds": round(time.monotonic() - began, 3),
                    },
                )
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        await asyncio.to_thread(self._remove_stale, keep=place)

    async def _unpack(self, image: str, digest: str, scratch: Path) -> None:
        layout = f"oci:{scratch / 'layout'}:image"
        await _run("skopeo", "copy", "--quiet", image, layout, timeout=PREPARE_TIMEOUT)
        copied = json.loads(await _run("skopeo", "inspect", layout, timeout=INSPECT_TIMEOUT))
        if copied.get("Digest") != digest:  # the tag moved between the two looks
            raise RuntimeUnavailable(f"{image} changed while it was fetched; try again")
        config = json.loads(
            await _run("skopeo", "inspect", "--config", layout, timeout=INSPECT_TIMEOUT)
        )
        image_config = config.get("config") or {}
        await _run(
            "umoci",
            "raw",
            "unpack",
            "--rootless",
            "--image",
            f"{scratch / 'layout'}:image",
            str(scratch / "rootfs"),
            timeout=PREPARE_TIMEOUT,
        )
        shutil.rmtree(scratch / "layout", ignore_errors=True)
        # Readable by the jobs' own uids; nothing in it writable but by this user.
        os.chmod(scratch / "rootfs", 0o755)
        (scratch / "config.json").write_text(
            json.dumps(
                {
                    "Env": image_config.get("Env") or [],
                    "WorkingDir": image_config.get("WorkingDir") or "",
                    "image": image,
                    "digest": digest,
                }
            )
        )
        (scratch / READY).write_text(digest + "\n")

    def _remove_stale(self, *, keep: Path) -> None:
        cutoff = time.time() - self.keep_days * 86400
        for entry in self.directory.iterdir():
            ready = entry / READY
            if entry == keep or not entry.is_dir() or entry.name.startswith("."):
                continue
            with contextlib.suppress(OSError):
                if ready.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
