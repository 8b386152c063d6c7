"""What a setup phase sends to keep is hostile: the worker unpacks it trusting nothing of it
(real tar archives, as a job's tar would write them, through a real pipe)."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

from reporun.worker.bwrap import brought
from reporun.worker.setup import NotKept, SetupCache, receive, setup_key


def _archive(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def _info(
    name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    return info


def _send(data: bytes, into: Path, **limits: int) -> int:
    read, write = os.pipe()

    def writer() -> None:
        with os.fdopen(write, "wb") as out, contextlib.suppress(BrokenPipeError):
            out.write(data)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        return receive(
            read,
            into,
            max_bytes=limits.get("max_bytes", 1 << 20),
            **{k: v for k, v in limits.items() if k != "max_bytes"},
        )
    finally:
        thread.join()


def test_a_plain_result_is_kept_readable_and_defanged(tmp_path: Path) -> None:
    into = tmp_path / "kept"
    into.mkdir()
    size = _send(
        _archive(
            (_info(".venv", tarfile.DIRTYPE, 0o700), b""),
            (_info(".venv/bin/tool", mode=0o4750), b"#!/bin/sh\n"),
            (_info(".venv/bin/python", tarfile.SYMTYPE, link="/usr/bin/python3"), b""),
            (_info(".venv/again", tarfile.LNKTYPE, link=".venv/bin/tool"), b""),
            (_info(".venv/null", tarfile.CHRTYPE), b""),
            (_info("node_modules/x/index.js", mode=0o600), b"module.exports = 1\n"),
        ),
        into,
    )
    assert size == len(b"#!/bin/sh\n") + len(b"module.exports = 1\n")
    tool = into / ".venv" / "bin" / "tool"
    assert stat.S_IMODE(tool.stat().st_mode) == 0o755  # no set-uid; readable by the next uids
    assert stat.S_IMODE((into / "node_modules/x/index.js").stat().st_mode) == 0o644
    assert os.readlink(into / ".venv/bin/python") == "/usr/bin/python3"  # made, not followed
    assert (into / ".venv/again").stat().st_ino == tool.stat().st_ino
    assert not (into / ".venv/null").exists()  # no device node


@pytest.mark.parametrize(
    "members",
    [
        [(_info("../outside"), b"x")],
        [(_info("/etc/outside"), b"x")],
        [(_info("a/../../outside"), b"x")],
        # A link, then a file through it: never written outside.
        [(_info("a", tarfile.SYMTYPE, link="OUTSIDE"), b""), (_info("a/outside"), b"x")],
        [(_info("b", tarfile.LNKTYPE, link="../outside"), b"")],
        [(_info("c"), b"1"), (_info("c"), b"2")],  # twice
    ],
)
def test_nothing_lands_outside(tmp_path: Path, members: list) -> None:
    into, outside = tmp_path / "kept", tmp_path / "elsewhere"
    into.mkdir()
    outside.mkdir()
    members = [
        (_info(i.name, i.type, i.mode, i.linkname.replace("OUTSIDE", str(outside))), d)
        for i, d in members
    ]
    with pytest.raises(NotKept):
        _send(_archive(*members), into)
    assert list(outside.iterdir()) == [] and not (tmp_path / "outside").exists()


def test_too_big_or_too_many_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(NotKept, match="larger than"):
        _send(_archive((_info("big"), b"x" * 100_000)), tmp_path / "a", max_bytes=50_000)
    (tmp_path / "b").mkdir()
    many = [(_info(f"f{i}"), b"") for i in range(20)]
    with pytest.raises(NotKept, match="more than 10 entries"):
        _send(_archive(*many), tmp_path / "b", max_entries=10)
    (tmp_path / "c").mkdir()
    assert _send(b"", tmp_path / "c") == 0  # nothing made: nothing kept
    with pytest.raises(NotKept, match="not a plain archive"):
        _send(b"garbage" * 100, tmp_path / "c")


def test_kept_links_are_made_again_inside_the_sandbox_not_bound(tmp_path: Path) -> None:
    kept, workspace = tmp_path / "kept", tmp_path / "ws"
    (kept / "node_modules").mkdir(parents=True)
    (kept / ".venv").symlink_to("/etc")
    (kept / "lib").mkdir()
    workspace.mkdir()
    (workspace / "lib").mkdir()  # the checkout has its own: not covered
    assert brought(kept, workspace) == [
        ("--symlink", "/etc", ".venv"),
        ("--ro-bind", str(kept / "node_modules"), "node_modules"),
    ]


def test_the_key_follows_what_pins_the_install(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("a==1\n")
    (tmp_path / "dev.txt").write_text("b==1\n")

    def key(**changes: object) -> str:
        base: dict = {
            "repo": "https://example.org/a.git",
            "runtime_digest": None,
            "setup": "pip install -rdev.txt",
            "env": {},
            "workspace": tmp_path,
        }
        return setup_key(**{**base, **changes})

    first = key()
    assert key() == first
    assert key(repo="https://example.org/b.git") != first
    assert key(env={"TOKEN": "x"}) != first
    assert key(runtime_digest="sha256:" + "1" * 64) != first
    (tmp_path / "dev.txt").write_text("b==2\n")  # named by -r: counted
    assert key() != first
    changed = key()
    (tmp_path / "requirements.txt").write_text("a==2\n")  # a lock file: counted
    assert key() != changed


async def test_what_crashed_setups_left_is_swept(tmp_path: Path) -> None:
    cache = SetupCache(tmp_path / "cache")
    old = cache.staging("alice", "k1")
    fresh = cache.staging("alice", "k2")
    day_ago = time.time() - 2 * 86400
    os.utime(old, (day_ago, day_ago))
    await cache.tidy()
    assert not old.exists() and fresh.is_dir()


async def test_a_result_too_big_to_keep_serves_its_own_job_only(tmp_path: Path) -> None:
    cache = SetupCache(tmp_path / "cache", max_bytes=10)
    scratch = cache.staging("alice", "k")
    (scratch / "kept" / ".venv").mkdir()
    (scratch / "kept" / ".venv" / "big").write_bytes(b"x" * 100)
    kept = await cache.keep("alice", "k", scratch, 100)
    assert kept is not None and kept.only_now and (kept.path / ".venv" / "big").is_file()
    kept.release()
    await cache.discard(kept.path.parent)  # what the job's run does after it
    assert not scratch.exists() and await cache.find("alice", "k") is None


def test_sparse_members_huge_headers_and_odd_names_are_refused(tmp_path: Path) -> None:
    # A sparse member (GNU tar's own) declares far more than its archive carries.
    holes = tmp_path / "holes"
    with holes.open("wb") as file:
        file.truncate(64 << 20)
    archive = tmp_path / "sparse.tar"
    subprocess.run(
        ["tar", "--sparse", "-cf", str(archive), "-C", str(tmp_path), "holes"], check=True
    )
    assert archive.stat().st_size < 1 << 20
    (tmp_path / "a").mkdir()
    with pytest.raises(NotKept):
        _send(archive.read_bytes(), tmp_path / "a", max_bytes=8 << 20)
    assert not (tmp_path / "a" / "holes").exists()
    # A PAX header read whole into memory: not a big one.
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("big-header")
        info.pax_headers = {"comment": "x" * 200_000}
        tar.addfile(info, io.BytesIO(b""))
    (tmp_path / "b").mkdir()
    with pytest.raises(NotKept, match="header of"):
        _send(out.getvalue(), tmp_path / "b", max_bytes=1 << 22)
    # A NUL inside a name: the job's fault, said as such.
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a")
        info.pax_headers = {"path": "a\x00b"}  # where a NUL can travel
        tar.addfile(info, io.BytesIO(b""))
    (tmp_path / "c").mkdir()
    with pytest.raises(NotKept):
        _send(out.getvalue(), tmp_path / "c")
