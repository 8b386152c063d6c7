"""`make bench`'s CLI start-up section runs to its end and reports each command (no timing:
the figures are the bench's to judge)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.acceptance.bench_run import quick_bench

# Among the longest files: started first, so the run does not end waiting on it.
pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_bench_cli_start_up_reports_each_command(tmp_path: Path) -> None:
    # This checkout's reporun, and the same one again as the baseline: both columns and ratios.
    own = Path(sys.executable).parent / "reporun"
    out = quick_bench(
        tmp_path / "bench.json", "--only", "cli", "--cli-rounds", "1", "--cli-baseline", str(own)
    )
    for command in ("--help", "jobs", "status_ID"):
        assert f"summary: cli_start command={command} baseline=" in out, out
    assert "target=" in out
    result = json.loads((tmp_path / "bench.json").read_text())["cli_start"]
    assert set(result["median"]) == {"baseline", "this"}
    assert all(len(runs) == 1 for runs in result["seconds"]["this"].values())
