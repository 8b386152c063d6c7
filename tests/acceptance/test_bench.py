"""`make bench` keeps working: a quick run completes with every job succeeded (no timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.acceptance.conftest import ROOT
from tests.conftest import require_tool


def test_bench_quick_run_completes(tmp_path: Path) -> None:
    require_tool("bwrap", "the job sandbox")
    output = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "summary: throughput parallelism=2" in result.stdout
    assert "summary: dispatch_latency" in result.stdout
    figures = json.loads(output.read_text())
    assert figures
