"""Where the CLI finds the local server's admin token (reporun.paths)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reporun.paths import (
    ADMIN_TOKEN_FILE,
    default_data_dir,
    find_admin_token,
    forget_server,
    record_server,
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("XDG_DATA_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    return tmp_path


def _token_in(data_dir: Path, token: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / ADMIN_TOKEN_FILE).write_text(token + "\n")


def test_the_token_goes_only_to_the_serve_recorded_on_that_port(home: Path) -> None:
    url = "http://127.0.0.1:8123"
    _token_in(default_data_dir(), "default-token")
    # Whatever else listens on the port of a shared machine gets no token.
    assert find_admin_token(url, None) is None
    served = home / "elsewhere"
    _token_in(served, "served-token")
    record = record_server("127.0.0.1", 8123, served)
    try:
        assert find_admin_token(url, None) == "served-token"
        assert find_admin_token("http://localhost:8123", None) == "served-token"
        assert find_admin_token("http://127.0.0.1:8124", None) is None
        assert find_admin_token("http://reporun.example:8123", None) is None  # not loopback
    finally:
        forget_server(record)
    assert find_admin_token(url, None) is None
    # REPORUN_DATA_DIR names it: that is the user's own word.
    assert find_admin_token(url, served) == "served-token"
    assert find_admin_token("http://reporun.example:8123", served) is None


def test_a_record_of_a_serve_that_is_gone_is_ignored(home: Path) -> None:
    served = home / "data"
    _token_in(served, "stale-token")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    record = record_server("127.0.0.1", 8125, served)
    text = record.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {gone.stdout.strip()}')
    record.write_text(text)
    assert find_admin_token("http://127.0.0.1:8125", None) is None
    # A pid that is now another user's process (here: init's) is not this user's serve.
    record.write_text(text.replace(f'"pid": {gone.stdout.strip()}', '"pid": 1'))
    if os.geteuid() != 0:
        assert find_admin_token("http://127.0.0.1:8125", None) is None
