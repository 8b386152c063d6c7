"""An image runtime for the tests: a Debian image with Python, built locally with podman (no
registry can be pulled from) and saved as an OCI archive, the form `oci-archive:PATH` that the
worker's skopeo reads as it would read `docker://` from a registry.

The `runtime_image` fixture (session) gives that reference. The image is tagged with a hash of
what goes into it and the archive kept in /var/tmp, so an unchanged tree builds nothing.
Marks of the image, for tests to look for: /etc/reporun-runtime holds RUNTIME_MARK, the `Env`
sets IMAGE_MARKER=from-image and puts /opt/tool (with a `hello` script) first on PATH. It has
`python3 -m venv` (with pip in each venv), for setup phases that install packages.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.podman import BASE_IMAGE, Podman, _file_lock

RUNTIME_MARK = "reporun-test-runtime"
CONTAINERFILE = f"""\
ARG BASE
FROM ${{BASE}}
RUN apt-get update \\
 && apt-get install -y --no-install-recommends python3 python3-venv \\
 && rm -rf /var/lib/apt/lists/* \\
 && echo {RUNTIME_MARK} > /etc/reporun-runtime \\
 && mkdir -p /opt/tool \\
 && printf '#!/bin/sh\\necho hello from the image\\n' > /opt/tool/hello \\
 && chmod +x /opt/tool/hello
ENV PATH=/opt/tool:/usr/local/bin:/usr/bin:/bin IMAGE_MARKER=from-image
WORKDIR /opt
"""
CACHE = Path("/var/tmp/reporun-test-runtimes")
# The roots the tests' workers prepare, shared by them all (REPORUN_RUNTIMES_DIR).
ROOTS = CACHE / "roots"


@pytest.fixture(scope="session")
def runtime_image() -> Iterator[str]:
    yield runtime_archive()


@pytest.fixture
def fresh_roots() -> Iterator[Path]:
    """A runtimes dir no worker prepared anything in, where the jobs' uids may pass (a
    pytest tmp_path is its user's alone); removed after the test."""
    CACHE.mkdir(parents=True, exist_ok=True, mode=0o755)
    CACHE.chmod(0o755)
    path = CACHE / f"fresh-{secrets.token_hex(6)}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def runtime_archive() -> str:
    """`oci-archive:PATH` of the image, built when this tree's version of it is missing."""
    engine = Podman()
    try:
        engine.start_cli()
        base = engine.ensure_base_image()
        base_id = engine.cli("image", "inspect", "--format", "{{.Id}}", base).stdout.strip()
        digest = hashlib.sha256(f"{CONTAINERFILE}\0{base_id}".encode()).hexdigest()[:16]
        archive = CACHE / f"python-{digest}.tar"
        if not archive.is_file():
            with _file_lock("reporun-test-runtime.lock"):
                if not archive.is_file():
                    _build(engine, BASE_IMAGE, digest, archive)
        CACHE.chmod(0o755)
        return f"oci-archive:{archive}"
    finally:
        shutil.rmtree(engine.state_dir, ignore_errors=True)


def _build(engine: Podman, base: str, digest: str, archive: Path) -> None:
    context = engine.state_dir / "runtime"
    context.mkdir(parents=True, exist_ok=True)
    (context / "Containerfile").write_text(CONTAINERFILE)
    tag = f"localhost/reporun-test-runtime:{digest}"
    engine.cli("build", "--pull=never", "--build-arg", f"BASE={base}", "-t", tag, str(context))
    CACHE.mkdir(parents=True, exist_ok=True, mode=0o755)
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    engine.cli("save", "--format", "oci-archive", "-o", str(partial), tag)
    partial.rename(archive)
    for old in CACHE.glob("python-*.tar"):  # earlier versions
        if old != archive:
            old.unlink(missing_ok=True)
