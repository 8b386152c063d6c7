"""`make bench`'s Kafka part keeps working (no timing): the Kafka queue and the SQL queue, with
1 worker only (each cell is a cluster of its own, about 10 s to start and stop). It also keeps
pg_workloads.throughput working, on the SQL queue as on Kafka's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.bench_run import quick_bench

# Among the longest files: started first, so the run does not end waiting on it.
pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_kafka_bench_dispatch_relay_and_throughput_complete(tmp_path: Path) -> None:
    out = quick_bench(
        tmp_path / "kafka.json",
        *("--no-embedded", "--no-elastic", "--pg-only", "kafka", "--kafka-workers", "1"),
        *("--latency-jobs", "2", "--pg-jobs", "4"),
    )
    assert "summary: pg_kafka_dispatch_latency workers=1 sql p50=" in out
    assert "summary: pg_kafka_outbox_publish workers=1 jobs=2 " in out
    assert "summary: pg_kafka_throughput workers=1 jobs=4 " in out
    figures = json.loads((tmp_path / "kafka.json").read_text())["postgres"]["kafka"]
    (dispatch,) = figures["dispatch"]
    assert dispatch["kafka"]["by_message"] + dispatch["kafka"]["by_handoff"] == 2
    assert dispatch["kafka"]["outbox"]["unpublished"] == 0
