"""The work dir sits in a shared /tmp by default: it must be ours alone."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from reporun.errors import ConfigError
from reporun.worker.workdir import prepare_work_dir


def test_created_traversable_but_not_listable(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    prepare_work_dir(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o711
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o711
    prepare_work_dir(target)  # again: fine


def test_a_symlink_planted_in_its_place_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "planted").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="REPORUN_WORK_DIR"):
        prepare_work_dir(tmp_path / "planted")


def test_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(ConfigError, match="REPORUN_WORK_DIR"):
        prepare_work_dir(shared)
