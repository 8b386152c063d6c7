"""`make bench`'s runtimes section runs to its end and reports both runtimes and the root's
preparation (no timing: the figures are the bench's to judge)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.bench_run import quick_bench


@pytest.mark.timeout(300)
def test_bench_runtimes_reports_host_image_and_preparation(
    runtime_image: str, tmp_path: Path
) -> None:
    out = quick_bench(tmp_path / "bench.json", "--only", "runtimes", "--runtime-rounds", "2")
    assert "summary: runtimes run host=" in out and " image=" in out, out
    assert "summary: runtimes prepare cold=" in out, out
    assert "summary: runtimes setup miss=" in out, out
    # Each network mode's trivial job, as a ratio to none's (this machine gives open).
    assert "summary: runtimes network none=" in out and "open/none=" in out, out
    result = json.loads((tmp_path / "bench.json").read_text())["runtimes"]
    assert set(result["median"]) == {"host", "image"} and result["rounds"] == 2
    assert result["prepare_cold"] > 0 and result["prepare_lookup"] > 0
    assert result["setup"]["miss"] > result["setup"]["hit"] > 0
