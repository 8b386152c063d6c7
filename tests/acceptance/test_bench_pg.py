"""`make bench`'s PostgreSQL part keeps working (no timing): dispatch and throughput here,
the rest in test_bench_pg_more.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acceptance.bench_run import quick_bench


@pytest.mark.timeout(240)
def test_pg_bench_dispatch_and_throughput_complete(tmp_path: Path) -> None:
    out = quick_bench(
        tmp_path / "pg.json",
        *("--no-embedded", "--no-elastic", "--pg-only", "dispatch,throughput"),
    )
    assert "summary: pg_dispatch_latency notify" in out
    assert "summary: pg_throughput workers=2" in out
