"""A job id is checked before anything else: with no token, no server and a bad id, `status`,
`logs` and `cancel` say the id is wrong (exit 2), not that a token is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from reporun.cli import app


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["logs", "-f"], ["cancel"]])
def test_a_bad_job_id_is_named_before_the_token_is_looked_up(
    command: list[str], tmp_path: Path
) -> None:
    env = {
        "REPORUN_TOKEN": None,
        "REPORUN_URL": "http://127.0.0.1:9",  # loopback: the CLI would look for serve's token
        "REPORUN_DATA_DIR": str(tmp_path / "data"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "XDG_STATE_HOME": str(tmp_path / "xdg-state"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
    }
    result = CliRunner().invoke(app, [command[0], "nope", *command[1:]], env=env)
    assert result.exit_code == 2, result.output
    assert result.output == "reporun: 'nope' is not a job id (a UUID)\n"
    assert list(tmp_path.iterdir()) == []  # nothing looked up or created
