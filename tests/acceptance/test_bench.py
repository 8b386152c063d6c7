"""`make bench` keeps working: quick runs complete with every job succeeded (no timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.conftest import ROOT
from tests.harness.processes import require_tool


def quick_bench(output: Path, *args: str) -> str:
    require_tool("bwrap", "the job sandbox")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--output", str(output), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert json.loads(output.read_text())
    return result.stdout


def test_bench_quick_run_completes(tmp_path: Path) -> None:
    out = quick_bench(tmp_path / "bench.json", "--no-elastic")
    assert "summary: throughput parallelism=2" in out
    assert "summary: dispatch_latency" in out


@pytest.mark.timeout(240)
def test_elastic_bench_quick_run_completes(tmp_path: Path) -> None:
    out = quick_bench(tmp_path / "elastic.json", "--no-embedded", "--no-postgres")
    assert "summary: elastic reaction" in out
    assert "summary: elastic burst" in out
    figures = json.loads((tmp_path / "elastic.json").read_text())["elastic"]
    assert figures["burst"]["autoscaled"]["most_workers"] > 1
