"""The listing measurement (cluster mode, PostgreSQL): GET /v1/jobs latency over a table of
a million jobs, bulk-inserted with SQL, for the admin, a heavy user and a light one, first
pages, cursor walks and deep cursors; POST /v1/jobs over that history; and the plans
PostgreSQL picks for the store's very statements (EXPLAIN ANALYZE)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from base import BenchError, progress, spread
from pg_workloads import COMMAND
from pgcluster import Cluster, cluster
from tests.harness.client import Client
from tests.harness.postgres import Postgres

from reporun.config import normalize_database_url
from reporun.jobs import JobSpec, JobStatus, Limits
from reporun.store import Store
from reporun.store.store import encode_cursor

LISTING_PAGE = 50
CURSOR_DEPTH = 20
HEAVY_USER = "heavy"  # a fifth of the listing table's jobs
LIGHT_USER = "user-0042"  # one of 1000 users sharing the rest (~800 jobs)
SEED_BATCH = 250_000

# Mostly ended jobs over the past year (30 s apart at a million, with jitter), the newest few
# queued or running; a fifth belong to one heavy user, the rest to 1000 users; fair tags
# increase with age as reporun's do; limits and env as the API stores them.
SEED_SQL = """
INSERT INTO jobs (id, owner, repo, ref, "commit", command, env, limits, status, exit_code,
                  reason, attempts, worker, fair_tag, created_at, started_at, finished_at,
                  lease_expires_at, cancel_requested, log_bytes, log_truncated)
SELECT gen_random_uuid(),
       CASE WHEN i % 5 = 0 THEN 'heavy'
            ELSE 'user-' || lpad((abs(hashint4(i)) % 1000)::text, 4, '0') END,
       'https://git.example.org/group/project-' || (i % 5000) || '.git',
       CASE WHEN i % 10 = 0 THEN 'main' END,
       CASE WHEN s.status <> 'queued' THEN md5(i::text) || left(md5((-i)::text), 8) END,
       'true',
       (CASE WHEN i % 7 = 0 THEN '{"CI": "1", "LEVEL": "3"}' ELSE '{}' END)::json,
       '{"timeout": 600, "memory": 1073741824, "processes": 256, "log": 1048576,
         "disk": 1073741824, "network": false, "timeout_set": false}'::json,
       s.status,
       CASE s.status WHEN 'succeeded' THEN 0 WHEN 'failed' THEN 1 END,
       CASE s.status WHEN 'failed' THEN 'exited with status 1'
                     WHEN 'timed_out' THEN 'timed out after 600 s'
                     WHEN 'cancelled' THEN 'cancelled before it started'
                     WHEN 'error' THEN 'worker lost; gave up after 3 attempts' END,
       CASE s.status WHEN 'queued' THEN 0 WHEN 'error' THEN 3 ELSE 1 END,
       CASE WHEN s.status <> 'queued' THEN 'worker-' || (i % 16) END,
       i,
       t.created,
       CASE WHEN s.status <> 'queued' THEN t.created + interval '0.05 s' END,
       CASE WHEN s.status NOT IN ('queued', 'running') THEN t.created + interval '2.5 s' END,
       CASE WHEN s.status = 'running' THEN now() + interval '30 s' END,
       s.status = 'cancelled',
       CASE WHEN s.status <> 'queued' THEN 200 + i % 4000 ELSE 0 END,
       false
FROM generate_series($1::int, $2::int - 1) AS g(i)
CROSS JOIN LATERAL (
    SELECT now() - make_interval(secs => ($3::int - i) * $4::float8 + random() * $4::float8 / 2)
           AS created) t
CROSS JOIN LATERAL (
    SELECT CASE WHEN i >= $3::int - 50 THEN 'queued'
                WHEN i >= $3::int - 60 THEN 'running'
                WHEN abs(hashint4(i + 1)) % 100 < 90 THEN 'succeeded'
                WHEN abs(hashint4(i + 1)) % 100 < 96 THEN 'failed'
                WHEN abs(hashint4(i + 1)) % 100 < 98 THEN 'timed_out'
                WHEN abs(hashint4(i + 1)) % 100 < 99 THEN 'cancelled'
                ELSE 'error' END AS status) s
"""
YEAR = 365 * 24 * 3600


async def seed(c: Cluster, rows: int) -> dict[str, Any]:
    conn = await c.connect()
    try:
        began = time.monotonic()
        for low in range(0, rows, SEED_BATCH):
            await conn.execute(SEED_SQL, low, min(low + SEED_BATCH, rows), rows, YEAR / rows)
            progress(f"  inserted {min(low + SEED_BATCH, rows)} of {rows} rows")
        inserted = time.monotonic() - began
        await conn.execute("ANALYZE jobs")
        size = await conn.fetchval("SELECT pg_size_pretty(pg_total_relation_size('jobs'))")
        heavy = await conn.fetchval("SELECT count(*) FROM jobs WHERE owner = $1", HEAVY_USER)
        light = await conn.fetchval("SELECT count(*) FROM jobs WHERE owner = $1", LIGHT_USER)
    finally:
        await conn.close()
    return {
        "rows": rows,
        "insert_seconds": inserted,
        "table_size": size,
        "heavy_user_jobs": heavy,
        "light_user_jobs": light,
    }


async def _timed(count: int, request: Callable[[], Awaitable[httpx.Response]]) -> list[float]:
    latencies = []
    for _ in range(count):
        begun = time.monotonic()
        response = await request()
        latencies.append(time.monotonic() - begun)
        if response.status_code not in (200, 202):
            raise BenchError(f"answered {response.status_code}: {response.text[:300]}")
    return latencies


async def _first_pages(http: httpx.AsyncClient, count: int, **params: Any) -> list[float]:
    return await _timed(count, lambda: http.get("/v1/jobs", params={"limit": 50, **params}))


async def _cursor_walks(http: httpx.AsyncClient, count: int) -> tuple[list[float], list[float]]:
    """Follow next_cursor CURSOR_DEPTH pages deep, again and again, `count` requests in all:
    (every page's latency, the deepest page's)."""
    every: list[float] = []
    deepest: list[float] = []
    while len(every) < count:
        params: dict[str, Any] = {"limit": LISTING_PAGE}
        for depth in range(CURSOR_DEPTH):
            begun = time.monotonic()
            response = await http.get("/v1/jobs", params=params)
            every.append(time.monotonic() - begun)
            if depth == CURSOR_DEPTH - 1:
                deepest.append(every[-1])
            page = response.json()
            if response.status_code != 200 or len(page["items"]) != LISTING_PAGE:
                raise BenchError(f"page {depth + 1}: {response.status_code} {response.text[:200]}")
            params["cursor"] = page["next_cursor"]
            if len(every) >= count:
                break
    return every, deepest


async def _middle_cursor(c: Cluster, owner: str | None) -> str:
    """The cursor a client holds halfway down the list (e.g. paging back six months)."""
    where = "WHERE owner = $1" if owner else "WHERE $1::text IS NULL"
    total = await c.fetchval(f"SELECT count(*) FROM jobs {where}", owner)
    rows = await c.fetch(
        f"SELECT created_at, id FROM jobs {where} ORDER BY created_at DESC, id DESC"
        " OFFSET $2 LIMIT 1",
        owner,
        total // 2,
    )
    return encode_cursor(rows[0]["created_at"], rows[0]["id"])


async def listing(server: Postgres, root: Path, rows: int, requests: int) -> dict[str, Any]:
    seeded: dict[str, Any] = {}

    async def fill(c: Cluster) -> None:
        seeded.update(await seed(c, rows))

    async with cluster(server, root, "listing", before_api=fill) as c:
        heavy, light = await c.tokens([HEAVY_USER, LIGHT_USER])
        deep = max(10, requests // 10)
        cases: dict[str, list[float]] = {}
        async with (
            c.api.client() as admin_client,
            c.api.client(heavy) as heavy_client,
            c.api.client(light) as light_client,
        ):
            admin, heavy_http, light_http = (
                admin_client.http,
                heavy_client.http,
                light_client.http,
            )
            for http in (admin, heavy_http, light_http):
                await _first_pages(http, 5)  # connections, caches, the api's pool warm
            progress("  first pages: admin, heavy user, light user")
            cases["admin"] = await _first_pages(admin, requests)
            cases["user_heavy"] = await _first_pages(heavy_http, requests)
            cases["user_light"] = await _first_pages(light_http, requests)
            progress(f"  cursor walks {CURSOR_DEPTH} pages deep")
            cases["admin_cursor"], cases["admin_cursor_page20"] = await _cursor_walks(
                admin, requests
            )
            cases["heavy_cursor"], cases["heavy_cursor_page20"] = await _cursor_walks(
                heavy_http, requests
            )
            cases["admin_status_queued"] = await _first_pages(admin, requests, status="queued")
            progress("  deep cursors (halfway down) and submissions to an empty queue")
            middles = {owner: await _middle_cursor(c, owner) for owner in (None, HEAVY_USER)}
            cases["admin_cursor_halfway"] = await _first_pages(admin, deep, cursor=middles[None])
            cases["heavy_cursor_halfway"] = await _first_pages(
                heavy_http, deep, cursor=middles[HEAVY_USER]
            )
            submissions = await _submissions_on_empty_queue(c, admin_client, deep)
            # The first scrape adds up settled history once; later ones read only recent ends.
            metrics = await _timed(3, lambda: admin.get("/metrics"))
        plans = await explain(c, middles)
    figures = {name: {"requests": len(v), **spread(v)} for name, v in cases.items()}
    return {
        **seeded,
        "cases": figures,
        "submit_empty_queue": {"requests": len(submissions), **spread(submissions)},
        "plans": plans,
        "metrics_seconds": metrics[0],
        "metrics_later_seconds": max(metrics[1:]),
    }


async def _submissions_on_empty_queue(c: Cluster, client: Client, count: int) -> list:
    """POST /v1/jobs while nothing is queued (each job cancelled before the next POST, so the
    queue stays empty): the submission path over a long history."""
    await c.fetchval(
        "UPDATE jobs SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL,"
        " reason = 'bench' WHERE status IN ('queued', 'running') RETURNING 1"
    )
    latencies = []
    for _ in range(count):
        begun = time.monotonic()
        job = await client.submit("https://git.example.org/group/project-1.git", command=COMMAND)
        latencies.append(time.monotonic() - begun)
        response = await client.http.post(f"/v1/jobs/{job['id']}/cancel")
        if response.status_code != 202:
            raise BenchError(f"cancel answered {response.status_code}: {response.text[:200]}")
    return latencies


async def explain(c: Cluster, middles: dict[str | None, str]) -> dict[str, dict[str, Any]]:
    """EXPLAIN ANALYZE of the very statements reporun's store runs for the listing cases (and
    for a submission), captured from SQLAlchemy: the plan's nodes, indexes and time."""
    store = Store.open(normalize_database_url(c.postgres.dsn(c.database)))
    statements: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    sa.event.listen(store.engine.sync_engine, "before_cursor_execute", capture)
    wanted: dict[str, tuple[str, Any]] = {}

    async def case(name: str, call: Callable[[], Awaitable[Any]], prefix: str = "SELECT") -> Any:
        statements.clear()
        result = await call()
        wanted[name] = next(s for s in reversed(statements) if s[0].lstrip().startswith(prefix))
        return result

    async def deep(owner: str | None) -> str | None:
        """The cursor of the last of CURSOR_DEPTH pages."""
        cursor = None
        for _ in range(CURSOR_DEPTH - 1):
            cursor = (await store.list_jobs(owner=owner, cursor=cursor)).next_cursor
        return cursor

    try:
        admin_deep, heavy_deep = await deep(None), await deep(HEAVY_USER)
        await case("admin", lambda: store.list_jobs(owner=None))
        await case("user_heavy", lambda: store.list_jobs(owner=HEAVY_USER))
        await case("user_light", lambda: store.list_jobs(owner=LIGHT_USER))
        await case("admin_cursor_page20", lambda: store.list_jobs(owner=None, cursor=admin_deep))
        await case(
            "heavy_cursor_page20", lambda: store.list_jobs(owner=HEAVY_USER, cursor=heavy_deep)
        )
        await case(
            "admin_cursor_halfway", lambda: store.list_jobs(owner=None, cursor=middles[None])
        )
        await case(
            "heavy_cursor_halfway",
            lambda: store.list_jobs(owner=HEAVY_USER, cursor=middles[HEAVY_USER]),
        )
        await case(
            "admin_status_queued", lambda: store.list_jobs(owner=None, status=JobStatus.QUEUED)
        )

        spec = JobSpec(
            repo="https://git.example.org/x.git",
            command="true",
            limits=Limits(timeout=600, memory=1 << 30, processes=256, log=1 << 20, disk=1 << 30),
        )
        job = await case("submit_empty_queue", lambda: store.create_job(spec, "x"), "INSERT")
        await store.cancel(job.id)  # the queue empty again
        statement, parameters = wanted["submit_empty_queue"]
        fresh = tuple(uuid.uuid4() if v == job.id else v for v in parameters)
        wanted["submit_empty_queue"] = (statement, fresh)
        plans = {}
        async with store.engine.connect() as conn:
            for name, (statement, parameters) in wanted.items():
                plans[name] = await _plan(conn, statement, parameters)
                await conn.rollback()  # the INSERT's EXPLAIN ANALYZE inserted nothing lasting
        return plans
    finally:
        await store.close()


async def _plan(conn: Any, statement: str, parameters: Any) -> dict[str, Any]:
    result = await conn.exec_driver_sql(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters
    )
    raw = result.scalar()
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]
    nodes: list[str] = []
    conditions: list[str] = []
    scanned = 0

    def walk(node: dict[str, Any]) -> None:
        nonlocal scanned
        label = node["Node Type"]
        if node.get("Scan Direction") == "Backward":
            label += " Backward"
        if "Index Name" in node:
            label += f" {node['Index Name']}"
        if "Index Cond" in node:
            conditions.append(f"{node['Index Name']}: {node['Index Cond']}")
        if node.get("Relation Name") and "Index Name" not in node:
            label += f" {node['Relation Name']}"
        nodes.append(label)
        scanned += int(node.get("Rows Removed by Filter", 0))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return {
        "nodes": nodes,
        "index_conditions": conditions,
        "rows_removed_by_filter": scanned,
        "execution_ms": plan["Execution Time"],
        "jit": "JIT" in plan,
    }
