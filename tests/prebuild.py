"""The images the tests build (the Debian base, the runtime image's archive, the reporun image,
the compose stand-ins), built in a process of their own from the start of a test run.

On a fresh machine they take minutes, mostly downloads and package installs. Built by the
first test that needs each, they would hold that test's process (and its timeout) while the
others queue behind the same lock; built here, beside the tests that need none, they are
ready, or nearly, when the first test needing one comes. Each build takes the lock a test
would take (tests/podman.py), so a test needing an image waits for this build rather than
starting its own, and a tree whose images exist builds nothing. A failure here is only
printed to the log: the tests that need the image build it again and report it.

`python -m tests.prebuild LOG` is what conftest.py starts; it stops it with the run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a test asks for when it needs a built image.
NEEDS_IMAGES = re.compile(r"\b(podman|runtime_image|fresh_roots)\b")


def wanted(args: list[str], base: Path) -> bool:
    """Whether the test files under `args` (pytest's paths, from `base`) use the images."""
    for arg in args or ["tests"]:
        path = (base / arg.split("::", 1)[0]).resolve()
        files = [path] if path.is_file() else path.rglob("test_*.py") if path.is_dir() else []
        for file in files:
            if NEEDS_IMAGES.search(file.read_text(errors="replace")):
                return True
    return False


def start(log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.prebuild"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its builds go with it (stop)
        )


def stop(process: subprocess.Popen[bytes]) -> int:
    """Its exit code (negative: it was still building, and is stopped)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    return process.wait()


def main() -> int:
    from tests.podman import Podman
    from tests.runtime_image import runtime_archive
    from tests.stack import build_stand_ins

    engine = Podman()
    try:
        engine.start_cli()
        engine.ensure_base_image()
        # The runtime image first: more test files wait on it than on the other two.
        steps = [
            ("the runtime image", runtime_archive),
            ("the reporun image", engine.build_image),
            ("the stand-ins", lambda: build_stand_ins(engine)),
        ]
        for name, step in steps:
            step()
            print(f"prebuild: {name} ready", flush=True)
    except BaseException:  # pytest.fail raises an exception that is not an Exception
        traceback.print_exc()
        return 1
    finally:
        shutil.rmtree(engine.state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
