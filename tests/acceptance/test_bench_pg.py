"""`make bench`'s PostgreSQL part keeps working (no timing): dispatch here (with LISTEN/NOTIFY
and polling) and the dashboard's pages and live-log followers, the rest in
test_bench_pg_more.py; throughput runs in test_bench_kafka.py, on
the SQL queue as on Kafka's."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acceptance.bench_run import quick_bench

# Among the longest files: started first, so the run does not end waiting on it.
pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_pg_bench_dispatch_completes(tmp_path: Path) -> None:
    out = quick_bench(
        tmp_path / "pg.json",
        *("--no-embedded", "--no-elastic", "--pg-only", "dispatch,dashboard"),
    )
    assert "summary: pg_dispatch_latency notify" in out
    assert " poll p50=" in out
    assert "summary: pg_dashboard rows=2000 page=jobs_admin " in out
    assert "summary: pg_followers n=20 " in out
