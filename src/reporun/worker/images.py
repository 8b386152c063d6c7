"""Fetch an OCI image and unpack it into a root filesystem a job may run in, with no root and
no daemon: skopeo copies it into an OCI layout, `umoci raw unpack --rootless` lays out its
files, then everything that could give a host user more than reading is taken out.

A reference is looked up first (`inspect`: its digest, the key of its root, and its layers). A
registry image is then fetched by that digest, so a tag that moves meanwhile cannot change what
is unpacked; an image from disk (`oci-archive:`, `oci:`, `docker-archive:`) is checked after
the copy to have the configuration the look-up saw (its JSON, which no conversion between
manifest formats or compressions changes, though skopeo may write it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from reporun.errors import SandboxError
from reporun.jobs import ENV_NAME_PATTERN, RESERVED_ENV

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
PREPARE_TIMEOUT = 900.0
INSPECT_TIMEOUT = 120.0
# Of an image's Env: at most this many entries, each at most this long.
ENV_MAX_VARS = 256
ENV_MAX_BYTES = 32 * 1024
# Files the sandbox binds the host's copy over when a job has a network.
NETWORK_FILES = ("resolv.conf", "hosts")
# What no file of a root keeps: set-id and sticky bits, and write for group and others.
STRIPPED_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH


class RuntimeUnavailable(SandboxError):
    """An image runtime could not be prepared (the registry, the image, the disk)."""


@dataclass(frozen=True, slots=True)
class Inspected:
    """What a look-up of a reference found."""

    digest: str
    config: str | None = None  # what identifies the image's config, for images from disk


async def run_tool(*argv: str, timeout: float) -> bytes:
    """Run skopeo or umoci; RuntimeUnavailable with its last line of stderr when it fails."""
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


def _json(raw: bytes, what: str) -> dict[str, object]:
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise RuntimeUnavailable(f"skopeo inspect gave no JSON for {what}")
    return value


async def _raw_config(image: str) -> bytes:
    """The config blob of `image` (of this platform's image, for a multi-platform one)."""
    return await run_tool("skopeo", "inspect", "--config", "--raw", image, timeout=INSPECT_TIMEOUT)


def _config_id(raw: bytes) -> str:
    """What identifies an image's config, however a copy spelt its JSON (skopeo writes a
    converted image's config again, compact)."""
    try:
        canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
    except ValueError:
        raise RuntimeUnavailable("an image's config is not JSON") from None
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


async def inspect(image: str) -> Inspected:
    """What `image` names now: the digest of its manifest (or of its list of platforms)."""
    found = _json(
        await run_tool("skopeo", "inspect", "--no-tags", image, timeout=INSPECT_TIMEOUT), image
    )
    digest = str(found.get("Digest", ""))
    if not DIGEST.match(digest):
        raise RuntimeUnavailable(f"{image} has an unexpected digest {digest[:80]!r}")
    if image.startswith("docker://"):  # fetched by that digest: nothing to compare
        return Inspected(digest)
    return Inspected(digest, _config_id(await _raw_config(image)))


def pinned(image: str, digest: str) -> str:
    """A registry reference fixed to `digest` (its tag, if any, dropped); others unchanged."""
    if not image.startswith("docker://"):
        return image
    name = image.removeprefix("docker://").partition("@")[0]
    head, slash, last = name.rpartition("/")
    return f"docker://{head}{slash}{last.partition(':')[0]}@{digest}"


def parse_env(entries: object) -> dict[str, str]:
    """An image's `Env`, without what a job may not be given either (the loader's, the shell's
    and reporun's own variables; PATH is the image's to set), malformed or oversized entries."""
    env: dict[str, str] = {}
    for entry in entries[:ENV_MAX_VARS] if isinstance(entries, list) else []:
        name, sep, value = str(entry).partition("=")
        if not sep or not ENV_NAME_PATTERN.match(name) or "\x00" in value:
            continue
        if len(value.encode(errors="replace")) > ENV_MAX_BYTES:
            continue
        if RESERVED_ENV.match(name) and name != "PATH":
            continue
        env[name] = value
    return env


def strip(tree: Path, *, readable: bool = False) -> int:
    """Leave in `tree` only what a host user could at most read and run: no set-id or sticky
    bit, no write for group or others, no file capabilities, no device node, fifo or socket
    (an image can carry a setuid-root shell or a node of the host's disk). `readable`: and
    everything readable by all (what one job kept, for the next jobs' uids). The bytes of
    its files."""

    def unreadable(error: OSError) -> None:
        raise error  # a directory left unread could keep what this takes out

    size = 0
    for top, dirs, files in os.walk(tree, onerror=unreadable):
        for name in (*dirs, *files):
            path = os.path.join(top, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                continue
            if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
                os.unlink(path)
                continue
            mode = stat.S_IMODE(info.st_mode) & ~STRIPPED_BITS
            if stat.S_ISDIR(info.st_mode):
                mode |= stat.S_IRWXU | (0o555 if readable else 0)  # so the walk goes in
            else:
                size += info.st_size
                mode |= 0o444 if readable else 0
            if mode != stat.S_IMODE(info.st_mode):
                os.chmod(path, mode, follow_symlinks=False)
            if stat.S_ISREG(info.st_mode):
                with contextlib.suppress(OSError):  # none there, or no xattrs on this disk
                    os.removexattr(path, "security.capability", follow_symlinks=False)
    return size


def harden(rootfs: Path) -> None:
    """`strip` an unpacked root, and make the files a host copy may be bound over."""
    strip(rootfs)
    os.chmod(rootfs, 0o755)
    # The files the sandbox binds a host copy over: regular, so a bind can land on them.
    etc = rootfs / "etc"
    if etc.is_dir() and not etc.is_symlink():
        for name in NETWORK_FILES:
            target = etc / name
            if target.is_symlink() or not target.is_file():
                with contextlib.suppress(FileNotFoundError):
                    if target.is_dir() and not target.is_symlink():
                        shutil.rmtree(target)
                    else:
                        target.unlink()
                target.write_text("")
                target.chmod(0o644)


async def unpack(image: str, looked_up: Inspected, scratch: Path) -> None:
    """Fetch `image` as `looked_up` saw it and lay out `scratch/rootfs` and `scratch/config.json`
    (its Env, working directory, reference and digest)."""
    layout = f"oci:{scratch / 'layout'}:image"
    source = pinned(image, looked_up.digest)
    await run_tool("skopeo", "copy", "--quiet", source, layout, timeout=PREPARE_TIMEOUT)
    raw = await _raw_config(layout)
    copied = _config_id(raw)
    if looked_up.config is not None and copied != looked_up.config:  # replaced on disk since
        raise RuntimeUnavailable(f"{image} changed while it was fetched; try again")
    config = _json(raw, "the copy's config")
    image_config = config.get("config")
    image_config = image_config if isinstance(image_config, dict) else {}
    await run_tool(
        "umoci",
        "raw",
        "unpack",
        "--rootless",
        "--image",
        f"{scratch / 'layout'}:image",
        str(scratch / "rootfs"),
        timeout=PREPARE_TIMEOUT,
    )
    await asyncio.to_thread(shutil.rmtree, scratch / "layout", True)
    await asyncio.to_thread(harden, scratch / "rootfs")
    workdir = image_config.get("WorkingDir")
    (scratch / "config.json").write_text(
        json.dumps(
            {
                "Env": image_config.get("Env") or [],
                "WorkingDir": workdir if isinstance(workdir, str) else "",
                "image": image,
                "digest": looked_up.digest,
            }
        )
    )
