"""The Kafka queue (REPORUN_QUEUE=kafka) against the SQL queue (LISTEN/NOTIFY, the default), in
the same run on the same PostgreSQL. Each measurement has a fresh database (pgcluster.cluster)
and, with Kafka, a fresh broker: Tansu (tests/harness/kafka.py), started before the cluster and
killed after it. Every process of both kinds logs JSON at INFO, so only the queue differs.

  dispatch   created_at -> started_at (`wait_seconds`) of jobs submitted one at a time to 1 and
             2 idle workers (pg_workloads.dispatch). With Kafka, from the workers' logs: how many
             jobs a worker claimed by their message ("claim") and how many from the database by
             the hand-off ("handoff": queued REPORUN_KAFKA_HANDOFF seconds, 1 by default,
             without the message reaching a free worker), which should rarely happen here.
  relay      for each Kafka dispatch job, its outbox row (topic `jobs`): created_at (the start
             of the API's transaction: the job and its row, committed with a NOTIFY) ->
             published_at (clock_timestamp() once the broker acked the relay's batch): the
             relay's wake-up, its send and the broker's ack, a part of the dispatch latency.
  throughput jobs/s (first POST -> last finished_at) of trivial jobs from 4 concurrent clients
             with 1 and 2 workers (pg_workloads.throughput).

Tansu makes a consumer group's first join wait for the rebalance timeout, so that is 1 s here
(the session timeout 3 s), and a Kafka measurement starts only once every worker has joined the
group and holds partitions no other worker holds (its last "partitions assigned"); then the
warm-up jobs go through every worker, as in the other measurements.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pg_workloads
from base import BenchError, spread, traversable_dir
from pgcluster import Cluster
from tests.harness import HarnessError
from tests.harness.kafka import Broker
from tests.harness.postgres import Postgres
from tests.harness.processes import Process
from tests.harness.server import STARTUP_TIMEOUT

QUEUES = ("sql", "kafka")
JOBS_TOPIC = "jobs"
LOG_ENV = {"REPORUN_LOG_FORMAT": "json", "REPORUN_LOG_LEVEL": "INFO"}
KAFKA_ENV = {
    "REPORUN_QUEUE": "kafka",
    "REPORUN_KAFKA_REBALANCE_TIMEOUT": "1",
    "REPORUN_KAFKA_SESSION_TIMEOUT": "3",
}


# A broker per measurement --------------------------------------------------------------------
@contextlib.asynccontextmanager
async def queue_env(root: Path, queue: str) -> AsyncIterator[dict[str, str]]:
    """The settings of `queue` for every process of a cluster; for Kafka with a fresh broker,
    killed on exit."""
    traversable_dir(root)
    if queue == "sql":
        yield dict(LOG_ENV)
        return
    broker = Broker(root / "tansu.log")
    try:
        try:
            await asyncio.to_thread(broker.start)
        except HarnessError as exc:
            raise BenchError(f"{exc} (or run with --no-kafka)") from exc
        yield {**LOG_ENV, **KAFKA_ENV, "REPORUN_KAFKA_BOOTSTRAP": broker.bootstrap}
    finally:
        await asyncio.shield(asyncio.to_thread(broker.kill))


# The workers' logs ---------------------------------------------------------------------------
def log_entries(process: Process) -> list[dict[str, Any]]:
    """The JSON lines of a process's log (anything else skipped)."""
    entries = []
    for line in process.log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


def assignment(process: Process) -> set[int] | None:
    """The partitions a worker holds by its log (its last assignment since it last joined the
    group); None before it joined and was assigned any."""
    held: set[int] | None = None
    for entry in log_entries(process):
        if entry.get("message") == "joined the consumer group":
            held = set()
        elif entry.get("message") == "partitions assigned" and held is not None:
            held = set(entry.get("partitions") or [])
    return held or None


async def joined(c: Cluster) -> None:
    """Until every worker has joined the group and holds partitions of its own."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        held = [assignment(process) for process in c.workers]
        owned = [partitions for partitions in held if partitions]
        if len(owned) == len(held) and sum(map(len, owned)) == len(set().union(*owned)):
            return
        for process in c.workers:
            if process.returncode is not None:
                raise BenchError(f"a worker exited {process.returncode}:\n{process.tail(2000)}")
        if time.monotonic() > deadline:
            raise BenchError(
                f"the workers did not share the partitions in {STARTUP_TIMEOUT:.0f} s: {held}"
            )
        await asyncio.sleep(0.1)


def claims(c: Cluster, ids: list[str]) -> dict[str, int]:
    """How the jobs `ids` were claimed, by the workers' logs: every claim logs action "claim",
    one taken from the database by the hand-off "handoff" first."""
    wanted = set(ids)
    counted: collections.Counter[str] = collections.Counter()
    for process in c.workers:
        for entry in log_entries(process):
            if entry.get("job_id") in wanted:
                counted[str(entry.get("action"))] += 1
    if counted["claim"] != len(wanted):
        raise BenchError(f"{counted['claim']} claims logged for {len(wanted)} jobs")
    return {"by_message": counted["claim"] - counted["handoff"], "by_handoff": counted["handoff"]}


# The outbox ----------------------------------------------------------------------------------
async def publish_delays(c: Cluster, ids: list[str]) -> dict[str, Any]:
    """created_at -> published_at of the jobs' outbox rows (topic `jobs`); p50, p95, max."""
    rows = await c.fetch(
        "SELECT extract(epoch FROM published_at - created_at)::float8 AS seconds FROM outbox"
        " WHERE topic = $1 AND payload->>'jobId' = ANY($2::text[])",
        JOBS_TOPIC,
        ids,
    )
    if len(rows) != len(ids):
        raise BenchError(f"{len(rows)} outbox rows for {len(ids)} jobs")
    delays = [r["seconds"] for r in rows if r["seconds"] is not None]
    return {"rows": len(rows), "unpublished": len(rows) - len(delays), **spread(delays)}


async def kafka_figures(c: Cluster, ids: list[str]) -> dict[str, Any]:
    return {**claims(c, ids), "outbox": await publish_delays(c, ids)}


# The measurements ----------------------------------------------------------------------------
async def dispatch(
    server: Postgres, root: Path, repo: str, jobs: int, workers: int, queue: str
) -> dict[str, Any]:
    """pg_workloads.dispatch (with LISTEN/NOTIFY) on `queue`, `workers` idle workers."""
    where = root / f"dispatch-{queue}-{workers}"
    async with queue_env(where, queue) as env:
        kafka = queue == "kafka"
        figures = await pg_workloads.dispatch(
            server,
            where,
            repo,
            jobs,
            True,
            workers=workers,
            env=env,
            ready=joined if kafka else None,
            inspect=kafka_figures if kafka else None,
        )
    return {"queue": queue, **figures}


async def throughput(
    server: Postgres, root: Path, repo: str, workers: int, jobs: int, queue: str
) -> dict[str, Any]:
    """pg_workloads.throughput on `queue`, `workers` workers."""
    where = root / f"throughput-{queue}-{workers}"
    async with queue_env(where, queue) as env:
        ready = joined if queue == "kafka" else None
        figures = await pg_workloads.throughput(
            server, where, repo, workers, jobs, env=env, ready=ready
        )
    return {"queue": queue, **figures}
