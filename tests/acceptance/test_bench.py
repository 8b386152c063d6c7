"""`make bench` keeps working: quick runs complete with every job succeeded (no timing), its
peers' (the floor loop, Celery with Redis) too.

The embedded part here; the PostgreSQL part in test_bench_pg*.py (two files, so that the test
processes share them), the elastic one in test_bench_elastic.py and the CLI's in
test_bench_cli.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acceptance.bench_run import quick_bench

# Among the longest files: started first, so the run does not end waiting on it.
pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_bench_quick_run_completes(tmp_path: Path) -> None:
    out = quick_bench(tmp_path / "bench.json", "--no-elastic", "--no-postgres")
    assert "summary: throughput parallelism=2" in out
    # Beside reporun, the floor loop and Celery with Redis (this machine's) did the same jobs.
    assert " ratio_floor=" in out and " ratio_celery=" in out
    assert "summary: dispatch_latency" in out
    assert "summary: single_job_latency p50=" in out
    assert "summary: submissions" in out
