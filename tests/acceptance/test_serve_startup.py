"""What `reporun serve` says as it starts, at the INFO level: no Alembic plugin noise, and the
migration named once, on the start that runs it."""

from __future__ import annotations

import signal
from pathlib import Path

from reporun.store.migrate import SCHEMA_HEAD
from tests.harness.processes import Processes, require_tool
from tests.harness.server import Server


def test_serve_starts_quietly_and_names_its_migration_once(
    tmp_path: Path, processes: Processes
) -> None:
    require_tool("bwrap", "the job sandbox")
    server = Server(processes, tmp_path / "data", REPORUN_LOG_LEVEL="INFO")
    outputs = []
    for start in ("first", "second"):
        log = tmp_path / f"serve-{start}.log"
        server.serve(log, "--workers", "0")
        assert server.process is not None
        server.process.stop(signal.SIGTERM)
        outputs.append(log.read_text())
    first, second = outputs
    assert "Application startup complete" in first, first  # INFO lines are shown
    for output in outputs:
        assert "setup plugin" not in output, output
        assert "Context impl" not in output, output
    migrating = [line for line in first.splitlines() if "migrating the database" in line]
    assert len(migrating) == 1, first
    assert f"from empty to {SCHEMA_HEAD}" in migrating[0]
    assert "migrating" not in second, second
