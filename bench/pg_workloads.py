"""The PostgreSQL (cluster mode) measurements. Each runs against a fresh database (see
pgcluster.cluster) and returns plain figures; run.py bounds each with a deadline, prints and
stores them.

  dispatch   created_at -> started_at of jobs submitted one at a time to 2 idle workers, with
             LISTEN/NOTIFY and with polling only (REPORUN_NOTIFY=false)
  throughput jobs/s end to end (first POST -> last finished_at) with 1, 2 and 4 workers
  (pg_kafka.py runs these two again with the Kafka queue, through their `env`, `ready` and
  `inspect`: settings for every process, a wait before warming up, figures of their own)
  load       many trivial jobs from 4 concurrent submitters (own user tokens) on 4 workers;
             every job must end exactly once
  listing    (pg_listing.py) GET /v1/jobs latency over a table of a million jobs
  lease      how long a job held by a SIGKILLed worker takes to run again
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from base import BenchError, gather_all, progress, spread, stamp
from pgcluster import Cluster, cluster
from tests.harness.client import Client
from tests.harness.postgres import Postgres
from workloads import require_succeeded

from reporun.observer.policy import percentile

COMMAND = "true"
SUBMITTERS = 4

# Awaited once the cluster's workers registered, before the warm-up (e.g. Kafka's group joined).
Ready = Callable[[Cluster], Awaitable[None]]
# Figures of a measurement's own, from its cluster and its job ids, before the cluster goes.
Inspect = Callable[[Cluster, list[str]], Awaitable[dict[str, Any]]]


# Talking to reporun -------------------------------------------------------------------------
async def pending(c: Cluster) -> int:
    return int(await c.fetchval("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"))


async def wait_drained(c: Cluster, *, report_every: float = 0.0, total: int = 0) -> None:
    """Until no job is queued or running (run.py bounds the wait); progress now and then."""
    last = time.monotonic()
    while left := await pending(c):
        if report_every and time.monotonic() - last >= report_every:
            last = time.monotonic()
            done = total - left if total else "?"
            progress(f"  {done} of {total or '?'} ended, {left} queued or running")
        await asyncio.sleep(0.1)


async def warm_up(c: Cluster, client: Client, repo: str) -> None:
    """Jobs until every worker has run one: mirrors cloned, every worker past its first job
    (and listening, when it listens), so what follows measures the steady state."""
    workers = len(c.workers)
    seen: set[str] = set()
    for _ in range(10):
        ids = [(await client.submit(repo, command=COMMAND))["id"] for _ in range(2 * workers)]
        records = [await client.wait(i, timeout=None) for i in ids]
        await require_succeeded(client, records)
        seen |= {r["worker"] for r in records}
        if len(seen) >= workers:
            await wait_drained(c)
            return
    raise BenchError(f"only {len(seen)} of {workers} workers ran a warm-up job")


async def submit_many(
    clients: list[Client], repo: str, total: int
) -> tuple[list[list[str]], list[float]]:
    """`total` POSTs shared out over the clients, each client sequential, all concurrent:
    (ids per client, POST latencies)."""
    shares = [total // len(clients) + (n < total % len(clients)) for n in range(len(clients))]
    ids: list[list[str]] = [[] for _ in clients]
    latencies: list[float] = []

    async def lane(n: int) -> None:
        for _ in range(shares[n]):
            begun = time.monotonic()
            ids[n].append((await clients[n].submit(repo, command=COMMAND))["id"])
            latencies.append(time.monotonic() - begun)

    await gather_all([lane(n) for n in range(len(clients))])
    return ids, latencies


async def ended_records(c: Cluster, ids: list[str]) -> list[dict[str, Any]]:
    """The jobs' rows (as the SQL has them), for the checks and the timings."""
    rows = await c.fetch(
        "SELECT id::text AS id, owner, status, attempts, worker, exit_code, reason,"
        " extract(epoch FROM created_at)::float8 AS created,"
        " extract(epoch FROM started_at)::float8 AS started,"
        " extract(epoch FROM finished_at)::float8 AS finished"
        " FROM jobs WHERE id = ANY($1::uuid[])",
        ids,
    )
    return [dict(r) for r in rows]


def require_ok(records: list[dict[str, Any]], expected: int) -> None:
    if len(records) != expected:
        raise BenchError(f"found {len(records)} of the {expected} jobs submitted")
    for r in records:
        if r["status"] != "succeeded" or r["finished"] is None:
            raise BenchError(
                f"job {r['id']} {r['status']} (exit {r['exit_code']}, reason {r['reason']!r})"
            )


# 1. Dispatch latency ------------------------------------------------------------------------
async def dispatch(
    server: Postgres,
    root: Path,
    repo: str,
    jobs: int,
    notify: bool,
    *,
    workers: int = 2,
    env: Mapping[str, str] | None = None,
    ready: Ready | None = None,
    inspect: Inspect | None = None,
) -> dict:
    mode = "notify" if notify else "poll"
    settings = {"REPORUN_NOTIFY": "true" if notify else "false", **(env or {})}
    waits: list[float] = []
    ids: list[str] = []
    async with (
        cluster(server, root, f"dispatch-{mode}", workers=workers, env=settings) as c,
        c.api.client() as client,
    ):
        if ready is not None:
            await ready(c)
        await warm_up(c, client, repo)
        for _ in range(jobs):
            await asyncio.sleep(random.uniform(0.1, 0.4))
            job = await client.submit(repo, command=COMMAND)
            record = await client.wait(job["id"], timeout=None)
            await require_succeeded(client, [record])
            waits.append(float(record["wait_seconds"]))
            ids.append(job["id"])
        own = await inspect(c, ids) if inspect is not None else {}
    return {"mode": mode, "workers": workers, "jobs": jobs, **spread(waits), **own}


# 2. Throughput ------------------------------------------------------------------------------
async def throughput(
    server: Postgres,
    root: Path,
    repo: str,
    workers: int,
    jobs: int,
    *,
    env: Mapping[str, str] | None = None,
    ready: Ready | None = None,
) -> dict:
    async with cluster(server, root, f"throughput-{workers}", workers=workers, env=env) as c:
        if ready is not None:
            await ready(c)
        async with c.api.client() as client:
            await warm_up(c, client, repo)
        clients = [c.api.client() for _ in range(SUBMITTERS)]
        try:
            started = time.time()
            ids, posts = await submit_many(clients, repo, jobs)
        finally:
            for client in clients:
                await client.aclose()
        await wait_drained(c)
        records = await ended_records(c, [i for lane in ids for i in lane])
    require_ok(records, jobs)
    seconds = max(r["finished"] for r in records) - started
    return {
        "workers": workers,
        "jobs": jobs,
        "seconds": seconds,
        "jobs_per_second": jobs / seconds,
        "run_seconds_p50": percentile([r["finished"] - r["started"] for r in records], 50),
        "post_p50": percentile(posts, 50),
    }


# 3. The load figure -------------------------------------------------------------------------
async def load(server: Postgres, root: Path, repo: str, jobs: int, workers: int) -> dict:
    async with cluster(server, root, "load", workers=workers) as c:
        users = [f"submitter-{n}" for n in range(SUBMITTERS)]
        tokens = await c.tokens(users)
        async with c.api.client() as client:
            await warm_up(c, client, repo)
        clients = [c.api.client(t) for t in tokens]
        try:
            progress(f"  submitting {jobs} jobs from {SUBMITTERS} clients")
            started = time.time()
            ids, posts = await submit_many(clients, repo, jobs)
            submitted = time.time() - started
            progress(f"  submitted in {submitted:.1f} s; waiting for the workers")
            await wait_drained(c, report_every=15.0, total=jobs)
            checks = await _exactly_once(c, clients, users, ids, jobs)
        finally:
            for client in clients:
                await client.aclose()
    wall = checks.pop("last_finished") - started
    return {
        "jobs": jobs,
        "submitters": SUBMITTERS,
        "workers": workers,
        "seconds": wall,
        "jobs_per_second": jobs / wall,
        "submit_seconds": submitted,
        "posts_per_second": jobs / submitted,
        "post_p50": percentile(posts, 50),
        "post_p95": percentile(posts, 95),
        **checks,
    }


async def _exactly_once(
    c: Cluster,
    clients: list[Client],
    users: list[str],
    ids: list[list[str]],
    jobs: int,
) -> dict[str, Any]:
    """Every id accepted once, present once, succeeded once; nothing left queued or running;
    each user's listing is exactly that user's jobs."""
    flat = [i for lane in ids for i in lane]
    if len(flat) != jobs or len(set(flat)) != jobs:
        raise BenchError(f"{len(flat)} POSTs accepted, {len(set(flat))} distinct ids, of {jobs}")
    records = await ended_records(c, flat)
    require_ok(records, jobs)
    owners = {r["id"]: r["owner"] for r in records}
    for user, lane in zip(users, ids, strict=True):
        if any(owners[i] != user for i in lane):
            raise BenchError(f"a job of {user} has another owner")
    left = await pending(c)
    if left:
        raise BenchError(f"{left} jobs still queued or running")
    by_status = {
        r["status"]: r["count"]
        for r in await c.fetch("SELECT status, count(*) AS count FROM jobs GROUP BY status")
    }
    if set(by_status) != {"succeeded"}:
        raise BenchError(f"jobs by status: {by_status}")
    retried = sum(1 for r in records if r["attempts"] != 1)
    for client, user, lane in zip(clients, users, ids, strict=True):
        seen = await client.jobs()
        if sorted(j["id"] for j in seen) != sorted(lane):
            raise BenchError(f"{user} lists {len(seen)} jobs, submitted {len(lane)}")
        if {j["status"] for j in seen} != {"succeeded"}:
            raise BenchError(f"{user}'s listing shows {sorted({j['status'] for j in seen})}")
    waits = [r["started"] - r["created"] for r in records]
    return {
        "exactly_once": True,
        "succeeded": len(records),
        "attempts_not_1": retried,
        "workers_used": len({r["worker"] for r in records}),
        "wait_p50": percentile(waits, 50),
        "wait_p95": percentile(waits, 95),
        "last_finished": max(r["finished"] for r in records),
    }


# 4. A dead worker's job ---------------------------------------------------------------------
async def lease(server: Postgres, root: Path, repo: str, lease_seconds: float | None) -> dict:
    """One worker runs `sleep 5`; SIGKILL it mid-job and start another at once: seconds from
    the kill until the job runs again (attempt 2) and until it ends."""
    env = {} if lease_seconds is None else {"REPORUN_LEASE_SECONDS": f"{lease_seconds:g}"}
    name = f"lease-{lease_seconds or 'default'}"
    async with (
        cluster(server, root, name, workers=1, env=env) as c,
        c.api.client() as client,
    ):
        await warm_up(c, client, repo)
        job_id = (await client.submit(repo, command="sleep 5"))["id"]
        record = await _poll(client, job_id, lambda r: r["status"] != "queued")
        if record["status"] != "running":
            raise BenchError(f"the job is {record['status']}, not running")
        await asyncio.sleep(1.0)  # in its sandbox by now
        first = c.workers[0]
        killed = time.time()
        await c.kill_worker(first)
        c.start_worker()
        again = await _poll(
            client, job_id, lambda r: r["attempts"] >= 2 and r["status"] != "queued"
        )
        ended = await client.wait(job_id, timeout=None)
    if (ended["status"], ended["attempts"]) != ("succeeded", 2):
        raise BenchError(f"the job ended {ended['status']} after {ended['attempts']} attempts")
    return {
        "lease_seconds": lease_seconds or 30.0,
        "lease_set": lease_seconds is not None,
        "running_again_seconds": stamp(again["started_at"]) - killed,
        "ended_seconds": stamp(ended["finished_at"]) - killed,
        "second_run_seconds": float(ended["run_seconds"]),
    }


async def _poll(
    client: Client, job_id: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    while not done(record := await client.job(job_id)):
        await asyncio.sleep(client.poll)
    return record
