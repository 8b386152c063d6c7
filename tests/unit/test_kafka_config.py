"""Kafka mode's settings and messages, without a broker."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reporun.config import Settings
from reporun.errors import ConfigError
from reporun.jobs import Job, JobStatus, Limits
from reporun.observer.results import Result, ResultsFeed, result_of
from reporun.queue.broker import KafkaConfig
from reporun.queue.kafka import job_id_of
from reporun.store.outbox import job_message, result_message
from reporun.wiring import build_queue, kafka_config, open_store

PG = "postgresql://reporun@db/reporun"
LIMITS = Limits(timeout=60, memory=1 << 30, processes=64, log=1 << 20, disk=1 << 30)


def kafka_settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path, queue="kafka", **values)  # type: ignore[arg-type]


def test_kafka_needs_a_broker_and_postgresql(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="REPORUN_KAFKA_BOOTSTRAP"):
        kafka_config(kafka_settings(tmp_path, database_url=PG))
    with pytest.raises(ConfigError, match="needs PostgreSQL"):
        kafka_config(kafka_settings(tmp_path, kafka_bootstrap="kafka:9092"))


def test_the_seeds_bootstrap_variable_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("REPORUN_QUEUE", "kafka")
    settings = Settings(data_dir=tmp_path, database_url=PG)
    assert kafka_config(settings).bootstrap == "kafka:9092"


def test_topics_get_twice_the_most_workers_as_partitions(tmp_path: Path) -> None:
    common = {"database_url": PG, "kafka_bootstrap": "k:9092"}
    assert kafka_config(kafka_settings(tmp_path, **common)).partitions == 4  # 2 workers
    assert kafka_config(kafka_settings(tmp_path, max_workers=8, **common)).partitions == 16
    assert kafka_config(kafka_settings(tmp_path, workers=0, **common)).partitions == 2
    chosen = kafka_settings(tmp_path, kafka_partitions=3, **common)
    assert kafka_config(chosen).partitions == 3


async def test_a_kafka_store_announces_and_the_queue_is_kafkas(tmp_path: Path) -> None:
    settings = kafka_settings(tmp_path, database_url=PG, kafka_bootstrap="k:9092")
    store = open_store(settings)
    try:
        assert store.outbox is not None and store.outbox.jobs_topic == "jobs"
        queue = build_queue(settings, store)
        assert queue.check_name == "kafka"
    finally:
        await store.close()
    sql = open_store(Settings(data_dir=tmp_path))
    try:
        assert (
            sql.outbox is None
            and build_queue(Settings(data_dir=tmp_path), sql).check_name == "queue"
        )
    finally:
        await sql.close()


def _job(**changes: object) -> Job:
    created = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "owner": "alice",
        "repo": "https://token@example.org/r.git",
        "ref": None,
        "commit": None,
        "command": None,
        "status": JobStatus.QUEUED,
        "exit_code": None,
        "reason": None,
        "attempts": 0,
        "worker": None,
        "created_at": created,
        "started_at": None,
        "finished_at": None,
        "log_bytes": 0,
        "log_truncated": False,
        "limits": LIMITS,
    }
    values.update(changes)
    return Job.model_validate(values)


def test_messages_carry_the_seeds_fields_and_no_repository_url() -> None:
    queued = _job()
    message = job_message(queued)
    assert message == {
        "jobId": str(queued.id),
        "attempt": 1,
        "timeJobPosted": int(queued.created_at.timestamp() * 1000),
    }
    assert job_id_of(json.dumps(message).encode()) == queued.id
    started = queued.created_at + timedelta(seconds=2)
    ended = _job(
        status=JobStatus.FAILED,
        exit_code=3,
        attempts=1,
        started_at=started,
        finished_at=started + timedelta(seconds=1.5),
    )
    result = result_message(ended)
    assert (result["status"], result["code"], result["exitCode"]) == ("failed", "Failed", 3)
    assert (result["timeWaited"], result["timeExecution"]) == (2000, 1500)
    assert "token" not in json.dumps(result) + json.dumps(message)
    parsed = result_of(json.dumps(result).encode())
    assert parsed is not None and (parsed.key, parsed.wait) == ((str(ended.id), 1), 2.0)
    assert parsed.finished == ended.finished_at.timestamp()
    # Retried: the wait is that of the run that ended, from when the job went back.
    requeued = queued.created_at + timedelta(seconds=1.5)
    assert result_message(ended, requeued)["timeWaited"] == 500


@pytest.mark.parametrize(
    "value", [b"", b"not json", b"[]", b'{"jobId": 3}', b'{"jobId": "nope"}', None]
)
def test_a_message_that_is_not_ours_names_no_job(value: bytes | None) -> None:
    assert job_id_of(value) is None


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"[1]",
        b'{"jobId": "j", "timeFinished": 5, "timeWaited": null}',
        b'{"jobId": "j", "timeFinished": 5, "timeWaited": -1}',
        b'{"jobId": "j", "timeFinished": 5, "timeWaited": true}',
        b'{"timeFinished": 5, "timeWaited": 1}',
    ],
)
def test_a_result_without_a_wait_adds_none(value: bytes) -> None:
    assert result_of(value) is None


def test_the_results_window_counts_by_when_jobs_ended_and_each_once() -> None:
    feed = ResultsFeed(KafkaConfig(bootstrap="k:9092"))
    now = time.time()
    feed.add(Result(("old", 1), now - 120, 600.0))  # read late: ended two minutes ago
    feed.add(Result(("new", 1), now - 1, 1.0))
    feed.add(Result(("new", 1), now - 1, 1.0))  # the same message again
    feed.add(Result(("new", 2), now, 3.0))  # its next attempt's end is another
    assert feed.recent(60) == [1.0, 3.0]
    assert feed.recent(300) == [600.0, 1.0, 3.0]
