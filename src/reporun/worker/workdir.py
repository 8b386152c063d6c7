"""The directory checkouts wait in for their sandbox: this user's alone, in a shared /tmp by
default, passable (not listable) by the jobs' uids."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from reporun.errors import ConfigError


def prepare_work_dir(path: Path, *, setting: str = "REPORUN_WORK_DIR") -> None:
    """Create the work dir (others may pass through, not list) and make sure nobody else owns
    or can write it or its parents we made: it sits in a shared /tmp by default. `setting`
    names the directory in the error."""
    missing = []
    probe = path
    while not probe.exists() and not probe.is_symlink():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o711, exist_ok=True)
        os.chmod(directory, 0o711)
    for directory in [path, *missing[1:]] if missing else [path]:
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise ConfigError(
                f"{directory} is not a directory of this user that only it can write; remove "
                f"it or set {setting}"
            )
