"""The dashboard on PostgreSQL (cluster mode): how long the API takes to answer its pages with
a million jobs stored, and what 200 browsers following live logs at once cost it.

pages      --pg-rows jobs (default 1 000 000) inserted with SQL (pg_listing's seed), then
           `reporun api`, signed in by sign-in links as the admin, a heavy user (a fifth of
           the jobs) and a light one: GET /jobs (the jobs page, with counts by status), with a
           status filter, a repository filter and 20 pages deep; GET /jobs/{id} (a job's
           page); GET /workers (the admin's charts); --pg-requests each. Wall time on
           loopback from request to the last byte: the server's time plus a local round trip.
           Target p95 < 50 ms.
followers  one job printing a line every 50 ms for 20 s, and --followers (default 200) clients
           reading GET /v1/jobs/{id}/events at once from its start to its end, as the job
           page's EventSource does: the API's RSS and the database's connections (every
           backend of the job's database) before, at the peak while all follow, and after;
           how long each follower's first event (the job's status) took, all opening at once;
           and every follower must get the whole log, byte for byte. The connections are
           bounded by the API's pool (10, and 10 more at a burst), not by the followers.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
from base import BenchError, progress, spread
from pg_listing import HEAVY_USER, LIGHT_USER, seed
from pgcluster import Cluster, cluster
from tests.harness.postgres import Postgres

PAGE_TARGET = 0.050
FOLLOWERS = 200
LINES = 400  # one every 50 ms: 20 s of log


def follow_command(lines: int) -> str:
    return (
        f'i=1; while [ $i -le {lines} ]; do echo "line $i of a log many follow"; i=$((i+1));'
        " sleep 0.05; done"
    )


NEXT_PAGE = re.compile(r'href="/jobs\?[^"]*cursor=([^"&]+)"[^>]*rel="next"')


async def _signed_in(c: Cluster, token: str) -> httpx.AsyncClient:
    """A client with a dashboard session (a sign-in link opened), as a browser has."""
    http = httpx.AsyncClient(base_url=c.api.url, timeout=30, trust_env=False)
    link = await http.post("/v1/signin-links", headers={"Authorization": f"Bearer {token}"})
    if link.status_code != 200:
        raise BenchError(f"signin-links answered {link.status_code}: {link.text[:200]}")
    code = link.json()["url"].split("code=", 1)[1]
    opened = await http.post("/signin/code", data={"code": code, "next": "/jobs"})
    if opened.status_code != 303 or "reporun_session" not in http.cookies:
        raise BenchError(f"the sign-in link answered {opened.status_code}")
    return http


async def _timed(http: httpx.AsyncClient, path: str, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        begun = time.monotonic()
        response = await http.get(path)
        latencies.append(time.monotonic() - begun)
        if response.status_code != 200:
            raise BenchError(f"GET {path} answered {response.status_code}")
    return latencies


async def _deep_path(http: httpx.AsyncClient, pages: int) -> str:
    """The jobs page `pages` pages down, following its "Older" links."""
    path = "/jobs"
    for _ in range(pages - 1):
        found = NEXT_PAGE.search((await http.get(path)).text)
        if found is None:
            raise BenchError(f"{path} has no next page")
        path = f"/jobs?cursor={found.group(1)}"
    return path


async def pages(server: Postgres, root: Path, rows: int, requests: int) -> dict[str, Any]:
    seeded: dict[str, Any] = {}

    async def fill(c: Cluster) -> None:
        seeded.update(await seed(c, rows))

    async with cluster(server, root, "dashboard", before_api=fill) as c:
        heavy_token, light_token = await c.tokens([HEAVY_USER, LIGHT_USER])
        job_id = await c.fetchval(
            "SELECT id FROM jobs WHERE owner = $1 AND status = 'succeeded'"
            " ORDER BY created_at DESC LIMIT 1",
            LIGHT_USER,
        )
        admin = await _signed_in(c, c.api.token)
        heavy = await _signed_in(c, heavy_token)
        light = await _signed_in(c, light_token)
        try:
            cases: dict[str, tuple[httpx.AsyncClient, str]] = {
                "jobs admin": (admin, "/jobs"),
                "jobs heavy user": (heavy, "/jobs"),
                "jobs light user": (light, "/jobs"),
                "jobs status=failed": (admin, "/jobs?status=failed"),
                "jobs repo=": (admin, "/jobs?repo=https://git.example.org/group/project-17.git"),
                "jobs page 20": (admin, await _deep_path(admin, 20)),
                "job page": (light, f"/jobs/{job_id}"),
                "workers (admin)": (admin, "/workers"),
            }
            for http, path in cases.values():
                await _timed(http, path, 3)  # the pool, the caches warm
            figures = {}
            for name, (http, path) in cases.items():
                progress(f"  dashboard: {name}, {requests} requests")
                figures[name] = {"requests": requests, **spread(await _timed(http, path, requests))}
        finally:
            for http in (admin, heavy, light):
                await http.aclose()
    return {**seeded, "cases": figures}


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for {pid}")


async def _connections(c: Cluster) -> int:
    """Backends on the job's database, the one asking left out."""
    return int(
        await c.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            c.database,
        )
    )


async def _follow(
    http: httpx.AsyncClient, job_id: str, began: float, first: list[float]
) -> tuple[str, int]:
    """One follower's whole stream: the log it was sent, and how many times it connected;
    `first` gets how long its first event (the job's status) took to come."""
    text = ""
    connections = 0
    heard = False
    last_id: str | None = None
    while True:
        connections += 1
        headers = {"Last-Event-ID": last_id} if last_id else {}
        async with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as answer:
            if answer.status_code == 204:
                return text, connections
            if answer.status_code != 200:
                raise BenchError(f"events answered {answer.status_code}")
            event: dict[str, str] = {}
            async for line in answer.aiter_lines():
                if line:
                    if not line.startswith(":"):
                        name, _, value = line.partition(": ")
                        event[name] = value
                    continue
                kind = event.get("event")
                if kind and not heard:
                    heard = True
                    first.append(time.monotonic() - began)
                if "id" in event:
                    last_id = event["id"]
                if kind == "log":
                    text += json.loads(event["data"])
                elif kind == "end":
                    return text, connections
                event = {}


async def followers(
    server: Postgres, root: Path, repo: str, count: int = FOLLOWERS, lines: int = LINES
) -> dict[str, Any]:
    async with cluster(server, root, "followers", workers=1) as c:
        assert c.api.process is not None
        pid = c.api.process.popen.pid
        limits = httpx.Limits(max_connections=count + 8, max_keepalive_connections=count + 8)
        headers = {"Authorization": f"Bearer {c.api.token}"}
        async with httpx.AsyncClient(
            base_url=c.api.url, headers=headers, timeout=60, limits=limits, trust_env=False
        ) as http:
            await http.get("/readyz")
            idle = {"rss": _rss_bytes(pid), "connections": await _connections(c)}
            answer = await http.post(
                "/v1/jobs", json={"repo": repo, "command": follow_command(lines)}
            )
            if answer.status_code != 202:
                raise BenchError(f"submit answered {answer.status_code}: {answer.text[:200]}")
            job_id = answer.json()["id"]
            progress(f"  followers: {count} streams on one job, {lines} lines, 20 a second")
            first: list[float] = []
            began = time.monotonic()
            tasks = [
                asyncio.ensure_future(_follow(http, job_id, began, first)) for _ in range(count)
            ]
            peak = dict(idle)
            while not all(t.done() for t in tasks):
                peak["rss"] = max(peak["rss"], _rss_bytes(pid))
                peak["connections"] = max(peak["connections"], await _connections(c))
                await asyncio.sleep(0.25)
            results = await asyncio.gather(*tasks)
            seconds = time.monotonic() - began
            log = (await http.get(f"/v1/jobs/{job_id}/logs")).content.decode()
            job = (await http.get(f"/v1/jobs/{job_id}")).json()
            await asyncio.sleep(1.0)
            after = {"rss": _rss_bytes(pid), "connections": await _connections(c)}
    whole = sum(1 for text, _ in results if text == log)
    if job["status"] != "succeeded" or log.count("\n") != lines or whole != count:
        raise BenchError(
            f"followers: job {job['status']}, {log.count(chr(10))} lines, {whole} of {count}"
            " followers got the whole log"
        )
    return {
        "followers": count,
        "lines": lines,
        "seconds": seconds,
        "idle": idle,
        "peak": peak,
        "after": after,
        "rss_per_follower": (peak["rss"] - idle["rss"]) / count,
        "reconnects": sum(n - 1 for _, n in results),
        "first_event": spread(first),
        "whole_logs": whole,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _mib(value: float) -> str:
    return f"{value / 2**20:.1f}"


def table(dashboard: dict[str, Any]) -> list[str]:
    lines = []
    if shown := dashboard.get("pages"):
        lines.append(
            f"dashboard pages, {shown['rows']} jobs stored, target p95 <"
            f" {PAGE_TARGET * 1000:.0f} ms:"
        )
        lines.append(f"  {'page':<22} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for name, row in shown["cases"].items():
            flag = " !" if row["p95"] is not None and row["p95"] >= PAGE_TARGET else ""
            lines.append(
                f"  {name:<22} {row['requests']:>8} {_ms(row['p50']):>8} {_ms(row['p95']):>8}"
                f" {_ms(row['max']):>8}{flag}"
            )
    if follow := dashboard.get("followers"):
        idle, peak, after = follow["idle"], follow["peak"], follow["after"]
        lines.append(
            f"live logs: {follow['followers']} followers of one job ({follow['lines']} lines,"
            f" {follow['seconds']:.1f} s), each got the whole log: {follow['whole_logs']}"
        )
        lines.append(
            f"  API RSS {_mib(idle['rss'])} MiB idle, {_mib(peak['rss'])} MiB at the peak"
            f" (x{peak['rss'] / idle['rss']:.2f}, {follow['rss_per_follower'] / 1024:.0f} KiB a"
            f" follower), {_mib(after['rss'])} MiB after"
        )
        lines.append(
            f"  database connections {idle['connections']} idle, {peak['connections']} at the"
            f" peak, {after['connections']} after; first event p50"
            f" {_ms(follow['first_event']['p50'])} ms, p95 {_ms(follow['first_event']['p95'])}"
            f" ms; reconnects {follow['reconnects']}"
        )
    return lines


def summary(dashboard: dict[str, Any]) -> list[str]:
    lines = []
    if shown := dashboard.get("pages"):
        for name, row in shown["cases"].items():
            lines.append(
                f"summary: pg_dashboard rows={shown['rows']} page={name.replace(' ', '_')}"
                f" p50={_ms(row['p50'])} ms p95={_ms(row['p95'])} ms"
            )
    if follow := dashboard.get("followers"):
        lines.append(
            f"summary: pg_followers n={follow['followers']}"
            f" rss_idle={_mib(follow['idle']['rss'])} MiB rss_peak={_mib(follow['peak']['rss'])}"
            f" MiB db_connections_idle={follow['idle']['connections']}"
            f" db_connections_peak={follow['peak']['connections']}"
        )
    return lines
