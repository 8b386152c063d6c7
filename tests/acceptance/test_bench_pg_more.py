"""`make bench`'s PostgreSQL part keeps working (no timing): load, listing and a lost lease."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acceptance.bench_run import quick_bench

# Among the longest files: started first, so the run does not end waiting on it.
pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_pg_bench_load_listing_and_lease_complete(tmp_path: Path) -> None:
    out = quick_bench(
        tmp_path / "pg.json",
        *("--no-embedded", "--no-elastic", "--pg-only", "load,listing,lease"),
    )
    assert "exactly_once=True" in out
    assert "summary: pg_listing rows=2000 case=admin " in out
    assert "summary: pg_dead_worker" in out
