"""Images written by hand, for the tests of preparing roots: the test runtime's image with one
more layer (any files, modes, device nodes or xattrs a hostile image might carry, and Env
entries), and multi-platform indexes, as OCI layouts that skopeo reads as it would a registry's.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
REF = "org.opencontainers.image.ref.name"


@dataclass
class Member:
    """One entry of a layer: a file, a directory, a fifo or a device node."""

    name: str
    kind: bytes = tarfile.REGTYPE
    mode: int = 0o644
    data: bytes = b""
    xattrs: dict[str, bytes] | None = None
    device: tuple[int, int] = (0, 0)
    link: str = ""


def _blob(layout: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(data)
    return digest


def _read(layout: Path, digest: str) -> dict:
    return json.loads((layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes())


def _layer(members: list[Member]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type, info.mode, info.uid, info.gid = member.kind, member.mode, 0, 0
            info.devmajor, info.devminor = member.device
            info.linkname = member.link
            if member.xattrs:
                info.pax_headers = {
                    f"SCHILY.xattr.{k}": v.decode("latin-1") for k, v in member.xattrs.items()
                }
            data = member.data if member.kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def layout_of(archive: str, layout: Path, ref: str = "base") -> None:
    """Copy an image (`oci-archive:...`) into the OCI layout `layout` as `ref`."""
    subprocess.run(
        ["skopeo", "copy", "--quiet", archive, f"oci:{layout}:{ref}"], check=True, timeout=300
    )


def _manifest_of(layout: Path, ref: str) -> dict:
    index = json.loads((layout / "index.json").read_text())
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get(REF) == ref:
            return entry
    raise KeyError(ref)


def _tag(layout: Path, ref: str, descriptor: dict) -> None:
    index = json.loads((layout / "index.json").read_text())
    index["manifests"] = [
        e for e in index["manifests"] if e.get("annotations", {}).get(REF) != ref
    ] + [{**descriptor, "annotations": {REF: ref}}]
    (layout / "index.json").write_text(json.dumps(index))


def add_layer(
    layout: Path,
    members: list[Member],
    *,
    base: str = "base",
    ref: str = "image",
    env: list[str] | None = None,
) -> str:
    """Tag `ref`: `base` with one more layer of `members` (and `env` added to its Env); the
    new manifest's digest."""
    descriptor = _manifest_of(layout, base)
    manifest = _read(layout, descriptor["digest"])
    config = _read(layout, manifest["config"]["digest"])
    layer = _layer(members)
    layer_digest = _blob(layout, layer)
    config["rootfs"]["diff_ids"].append(layer_digest)
    config.setdefault("config", {})["Env"] = [*config["config"].get("Env", []), *(env or [])]
    config_bytes = json.dumps(config).encode()
    manifest["config"] = {
        **manifest["config"],
        "digest": _blob(layout, config_bytes),
        "size": len(config_bytes),
    }
    manifest["layers"].append({"mediaType": LAYER, "digest": layer_digest, "size": len(layer)})
    manifest_bytes = json.dumps(manifest).encode()
    digest = _blob(layout, manifest_bytes)
    _tag(layout, ref, {"mediaType": MANIFEST, "digest": digest, "size": len(manifest_bytes)})
    return digest


def multi_platform(layout: Path, *, base: str = "base", ref: str = "multi") -> str:
    """Tag `ref`: an index of `base` for linux/amd64 and (the same manifest, standing in for
    another build) linux/arm64, as registries serve `python:3.12`; the index's digest."""
    descriptor = _manifest_of(layout, base)
    entry = {k: descriptor[k] for k in ("mediaType", "digest", "size")}
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {**entry, "platform": {"architecture": "arm64", "os": "linux"}},
            {**entry, "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    }
    data = json.dumps(index).encode()
    digest = _blob(layout, data)
    _tag(layout, ref, {"mediaType": INDEX, "digest": digest, "size": len(data)})
    return digest


def tiny_layout(layout: Path, ref: str = "base") -> None:
    """An OCI layout of one small image, written by hand: /etc/reporun-runtime, an Env, no
    system (a root's preparation, not a job's run, is what it is for)."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
    layer = _layer(
        [
            Member("etc", tarfile.DIRTYPE, 0o755),
            Member("etc/reporun-runtime", data=b"reporun-test-runtime\n"),
            Member("opt", tarfile.DIRTYPE, 0o755),
        ]
    )
    layer_digest = _blob(layout, layer)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _blob(layout, config),
                "size": len(config),
            },
            "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": len(layer)}],
        }
    ).encode()
    _tag(
        layout,
        ref,
        {"mediaType": MANIFEST, "digest": _blob(layout, manifest), "size": len(manifest)},
    )
