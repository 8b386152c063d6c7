"""Preparing image roots for real (skopeo and umoci on images written to disk): what a hostile
image carries is taken out, every transport and a multi-platform image prepare, workers of a
host prepare a digest once, a registry outage falls back to the root prepared last, unused
roots go under their lock, and a cancelled wait leaves nothing behind."""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import shutil
import stat
import tarfile
import threading
import time
from pathlib import Path

import pytest

from reporun.errors import ConfigError
from reporun.runtimes import Runtime
from reporun.worker import images
from reporun.worker.bwrap import job_environment
from reporun.worker.images import RuntimeUnavailable, parse_env
from reporun.worker.runtimes import READY, RootStore
from tests.oci_image import Member, add_layer, multi_platform, tiny_layout

# security.capability of `setcap cap_net_raw+ep` (VFS_CAP_REVISION_2).
CAPABILITY = bytes.fromhex("0000000200200000000000000000000000000000")
HOSTILE = [
    Member("opt/evil", tarfile.DIRTYPE, 0o3777),  # setgid and sticky, writable by all
    Member("opt/evil/suid", mode=0o4755, data=b"#!/bin/sh\nid\n"),
    Member("opt/evil/sgid", mode=0o2755, data=b"#!/bin/sh\nid\n"),
    Member("opt/evil/open", mode=0o666, data=b"anyone may write me\n"),
    Member("opt/evil/caps", mode=0o755, data=b"x", xattrs={"security.capability": CAPABILITY}),
    Member("opt/evil/fifo", tarfile.FIFOTYPE, 0o666),
    Member("opt/evil/null", tarfile.CHRTYPE, 0o666, device=(1, 3)),
    Member("opt/evil/disk", tarfile.BLKTYPE, 0o666, device=(8, 0)),
    Member("etc/resolv.conf", tarfile.SYMTYPE, 0o777, link="../run/systemd/resolve/stub.conf"),
]


def runtime(image: str) -> Runtime:
    return Runtime("test-rt", image)


def prepared(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "action", "") == "runtime_prepared"]


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """A small image (the store's work is the same for any size; a job's run is tested with
    the real runtime image in test_runtimes.py)."""
    path = tmp_path / "layout"
    tiny_layout(path)
    return path


@pytest.fixture
def store(tmp_path: Path) -> RootStore:
    roots = RootStore(tmp_path / "roots", refresh=0.0, retry_after=30.0)
    roots.check()
    return roots


async def test_a_hostile_image_is_defanged(layout: Path, store: RootStore) -> None:
    add_layer(layout, HOSTILE)
    root = await store.prepare(runtime(f"oci:{layout}:image"))
    assert root is not None
    evil = root.path / "opt" / "evil"
    assert (evil / "suid").read_bytes() == b"#!/bin/sh\nid\n"  # the files are there...
    for top, dirs, files in os.walk(root.path):
        for name in (*dirs, *files):
            info = os.lstat(os.path.join(top, name))
            if stat.S_ISLNK(info.st_mode):
                continue
            where = os.path.join(top, name)
            # ... but nothing set-id, sticky, writable by others, or not a file or directory.
            assert stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode), where
            assert not info.st_mode & images.STRIPPED_BITS, (where, oct(info.st_mode))
            if stat.S_ISREG(info.st_mode):
                assert "security.capability" not in os.listxattr(where), where
    # (umoci makes the nodes empty files, or they are gone: neither opens a device)
    assert {"caps", "open", "sgid", "suid"} <= set(os.listdir(evil))
    assert stat.S_IMODE(os.lstat(evil / "suid").st_mode) == 0o755
    resolv = root.path / "etc" / "resolv.conf"
    assert resolv.is_file() and not resolv.is_symlink()  # a file a host copy can be bound over
    assert stat.S_IMODE(os.lstat(root.path).st_mode) == 0o755


async def test_a_multi_platform_image_and_a_docker_archive_prepare(
    layout: Path, store: RootStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reporun.worker")
    index_digest = multi_platform(layout)
    root = await store.prepare(runtime(f"oci:{layout}:multi"))
    # Keyed by what the reference names (the index), though what was unpacked is amd64's.
    assert root is not None and root.digest == index_digest
    assert (root.path / "etc" / "reporun-runtime").is_file()
    archive = tmp_path / "image.docker.tar"
    await images.run_tool(
        "skopeo",
        "copy",
        "-q",
        f"oci:{layout}:base",
        f"docker-archive:{archive}:rt/x:1",
        timeout=300,
    )
    from_docker = await store.prepare(runtime(f"docker-archive:{archive}"))
    assert from_docker is not None and (from_docker.path / "etc" / "reporun-runtime").is_file()
    assert len(prepared(caplog)) == 2
    # Prepared once each: a second look finds them.
    await store.prepare(runtime(f"oci:{layout}:multi"))
    await store.prepare(runtime(f"docker-archive:{archive}"))
    assert len(prepared(caplog)) == 2


def test_a_registry_reference_is_fetched_by_the_digest_it_was_looked_up_by() -> None:
    digest = "sha256:" + "a" * 64
    assert images.pinned("docker://python:3.12-slim", digest) == f"docker://python@{digest}"
    assert (
        images.pinned("docker://registry:5000/team/py:3.12", digest)
        == f"docker://registry:5000/team/py@{digest}"
    )
    assert images.pinned(f"docker://r:5000/py@sha256:{'b' * 64}", digest) == (
        f"docker://r:5000/py@{digest}"
    )
    assert images.pinned("oci-archive:/srv/py.tar", digest) == "oci-archive:/srv/py.tar"


async def test_an_archive_replaced_while_it_is_fetched_is_refused(
    layout: Path, tmp_path: Path
) -> None:
    add_layer(layout, [Member("opt/other", data=b"another image\n")], ref="other")
    before = await images.inspect(f"oci:{layout}:base")
    # Between the look-up and the copy, the operator's tag comes to name another image.
    index = json.loads((layout / "index.json").read_text())
    for entry in index["manifests"]:
        names = entry.get("annotations", {})
        if names.get("org.opencontainers.image.ref.name") == "base":
            entry["digest"] = next(
                e["digest"]
                for e in index["manifests"]
                if e.get("annotations", {}).get("org.opencontainers.image.ref.name") == "other"
            )
    (layout / "index.json").write_text(json.dumps(index))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(RuntimeUnavailable, match="changed while it was fetched"):
        await images.unpack(f"oci:{layout}:base", before, scratch)


async def test_workers_of_a_host_prepare_a_digest_once(
    layout: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reporun.worker")
    workers = [RootStore(tmp_path / "shared") for _ in range(3)]
    workers[0].check()
    roots = await asyncio.gather(*(w.prepare(runtime(f"oci:{layout}:base")) for w in workers))
    assert len({r.path for r in roots if r is not None}) == 1
    assert len(prepared(caplog)) == 1
    left = sorted(p.name for p in (tmp_path / "shared").iterdir())
    assert left == [roots[0].path.parent.name, roots[0].path.parent.name + ".lock"]


async def test_an_outage_falls_back_to_the_root_prepared_last(
    layout: Path, store: RootStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = f"oci:{layout}:base"
    first = await store.prepare(runtime(image))
    assert first is not None
    calls: list[tuple[str, ...]] = []
    real = images.run_tool

    async def counted(*argv: str, timeout: float) -> bytes:
        calls.append(argv)
        return await real(*argv, timeout=timeout)

    monkeypatch.setattr(images, "run_tool", counted)
    shutil.move(layout, tmp_path / "gone")  # the registry is down
    # A new worker of the host (nothing in memory) runs in what the directory holds.
    again = await RootStore(store.directory, refresh=0.0).prepare(runtime(image))
    assert again is not None and again.path == first.path
    assert calls and calls[0][:2] == ("skopeo", "inspect")
    # With nothing prepared: one line, and a queue of jobs does not each wait for the registry.
    empty = RootStore(tmp_path / "empty", retry_after=30.0)
    empty.check()
    with pytest.raises(RuntimeUnavailable, match="skopeo inspect failed") as failed:
        await empty.prepare(runtime(image))
    calls.clear()
    with pytest.raises(RuntimeUnavailable) as again_failed:
        await empty.prepare(runtime(image))
    assert calls == [] and again_failed.value.message == failed.value.message


def _fake_root(directory: Path, name: str, *, age_days: float) -> Path:
    place = directory / name
    (place / "rootfs").mkdir(parents=True, mode=0o755)
    (place / "config.json").write_text(json.dumps({"digest": name, "image": "oci:/x:y"}))
    (place / READY).write_text(name)
    then = time.time() - age_days * 86400
    os.utime(place / READY, (then, then))
    return place


async def test_unused_roots_go_under_their_lock(store: RootStore) -> None:
    old = _fake_root(store.directory, "sha256-" + "1" * 64, age_days=30)
    recent = _fake_root(store.directory, "sha256-" + "2" * 64, age_days=1)
    orphan = store.directory / f".{old.name}.4242.cafe"  # a crashed preparation's
    (orphan / "rootfs").mkdir(parents=True)
    held = os.open(store.directory / f"{old.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX)  # another worker is preparing or using it
    await store.tidy()
    assert old.is_dir() and orphan.is_dir() and recent.is_dir()
    os.close(held)
    await store.tidy()
    assert not old.exists() and not orphan.exists() and recent.is_dir()
    assert not [p for p in store.directory.iterdir() if p.name.startswith(".")]


async def test_a_cancelled_wait_for_the_lock_leaves_no_thread(
    store: RootStore, layout: Path
) -> None:
    image = f"oci:{layout}:base"
    digest = (await images.inspect(image)).digest
    held = os.open(
        store.directory / f"{digest.replace(':', '-')}.lock", os.O_RDWR | os.O_CREAT, 0o600
    )
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        threads = threading.active_count()
        task = asyncio.create_task(store.prepare(runtime(image)))
        await asyncio.sleep(1.0)
        assert not task.done()  # waiting for the other worker
        task.cancel()
        began = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - began < 1.0
        await asyncio.sleep(0.1)
        assert threading.active_count() <= threads
    finally:
        os.close(held)
    assert not [p for p in store.directory.iterdir() if p.name.startswith(".")]


def test_the_runtimes_dir_must_be_this_users_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="REPORUN_RUNTIMES_DIR"):
        RootStore(shared).check()
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(ConfigError, match="REPORUN_RUNTIMES_DIR"):
        RootStore(tmp_path / "link").check()


async def test_a_planted_place_is_not_taken_for_a_root(
    store: RootStore, layout: Path, tmp_path: Path
) -> None:
    image = f"oci:{layout}:base"
    digest = (await images.inspect(image)).digest
    planted = tmp_path / "planted"
    (planted / "rootfs").mkdir(parents=True)
    (planted / READY).write_text(digest)
    (store.directory / digest.replace(":", "-")).symlink_to(planted)
    root = await store.prepare(runtime(image))
    assert root is not None and (root.path / "etc" / "reporun-runtime").is_file()
    assert not root.path.parent.is_symlink() and planted.is_dir()


def test_an_images_env_gives_nothing_a_job_may_not_set() -> None:
    env = parse_env(
        [
            "PATH=/opt/bin:/usr/bin",
            "LANG=de_DE.UTF-8",
            "LD_PRELOAD=/opt/evil.so",
            "REPORUN_TOKEN=x",
            "HOME=/root",
            "BASH_ENV=/opt/evil",
            "bad name=1",
            "NUL=a\x00b",
            "HUGE=" + "x" * (images.ENV_MAX_BYTES + 1),
            "noequals",
            "PYTHONPATH=/opt/lib",
        ]
    )
    assert env == {
        "PATH": "/opt/bin:/usr/bin",
        "LANG": "de_DE.UTF-8",
        "PYTHONPATH": "/opt/lib",
    }
    # The job's own variables over reporun's over the image's.
    seen = job_environment({"PYTHONPATH": "/work/src"}, env)
    assert seen["PATH"] == "/opt/bin:/usr/bin" and seen["HOME"] == "/work"
    assert seen["LANG"] == "de_DE.UTF-8" and seen["PYTHONPATH"] == "/work/src"
    assert len(parse_env([f"V{i}=1" for i in range(1000)])) == images.ENV_MAX_VARS


async def test_a_root_in_use_is_not_removed(store: RootStore, layout: Path) -> None:
    image = f"oci:{layout}:base"
    held = await store.hold(runtime(image))
    assert held is not None
    place = held.root.path.parent
    month_ago = time.time() - 30 * 86400
    os.utime(place / READY, (month_ago, month_ago))  # a job that has run for a month
    await store.tidy()
    assert (place / READY).is_file()
    held.release()
    held.release()  # once is enough; twice is harmless
    await store.tidy()
    assert not place.exists()
    # The next job prepares it again.
    again = await store.hold(runtime(image))
    assert again is not None and (again.root.path / "etc" / "reporun-runtime").is_file()
    again.release()
