"""`make bench`'s elastic part keeps working: a quick run completes, and the burst grew the
pool (no timing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.bench_run import quick_bench

# Among the longest files: started first, so the run does not end waiting on it.
pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_elastic_bench_quick_run_completes(tmp_path: Path) -> None:
    out = quick_bench(tmp_path / "elastic.json", "--no-embedded", "--no-postgres")
    assert "summary: elastic reaction" in out
    assert "summary: elastic burst" in out
    figures = json.loads((tmp_path / "elastic.json").read_text())["elastic"]
    assert figures["burst"]["autoscaled"]["most_workers"] > 1
