"""The probes of the parts that serve no API (REPORUN_HEALTH_PORT) on real `reporun worker` and
`reporun observer` processes, and the advisory scaler Kubernetes runs the observer with."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from reporun.config import Settings
from reporun.errors import ConfigError
from reporun.health import MAX_CONNECTIONS, HealthServer
from reporun.observer.loop import Observer
from reporun.observer.policy import PolicySettings
from reporun.observer.scalers import AdvisoryScaler, LocalScaler
from reporun.queue import QueueConfig
from reporun.queue.sql import SqlQueue
from reporun.store import Store
from tests.harness.ports import LOOPBACK, free_port
from tests.harness.processes import Processes
from tests.harness.server import REPORUN


def part_env(settings: Settings, port: int) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "REPORUN_DATA_DIR": str(settings.data_dir),
        "REPORUN_DATABASE_URL": settings.db_url,
        "REPORUN_HEALTH_PORT": str(port),
        "REPORUN_HEALTH_HOST": LOOPBACK,
        "REPORUN_LOG_LEVEL": "INFO",
    }


async def answer(url: str, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            try:
                return await http.get(url)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


@pytest.mark.parametrize("part", ["worker", "observer"])
async def test_a_part_answers_its_probes(
    part: str, settings: Settings, store: Store, tmp_path: Path
) -> None:
    port = free_port()
    env = part_env(settings, port)
    argv = [*REPORUN, part]
    if part == "observer":
        env["REPORUN_SCALER"] = "none"
        argv += ["--min-workers", "1", "--max-workers", "2"]
    processes = Processes()
    try:
        process = processes.start(argv, env, tmp_path / f"{part}.log")
        alive = await answer(f"http://{LOOPBACK}:{port}/healthz")
        assert alive.status_code == 200, process.tail()
        assert alive.json() == {"status": "ok", "part": part}
        ready = await answer(f"http://{LOOPBACK}:{port}/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"database": "ok", "queue": "ok"}}
        processes.stop(timeout=15)
        assert process.returncode == 0, process.tail()
        assert f"health probes on {LOOPBACK}:{port}" in process.tail()
    finally:
        processes.close()


async def test_probes_share_one_check_and_a_flood_is_turned_away() -> None:
    """Probes arriving together share one readiness check; past the connection limit a probe
    is closed unanswered, and the others still get theirs. HEAD gets no body."""
    calls = 0
    release = asyncio.Event()

    async def slow() -> None:
        nonlocal calls
        calls += 1
        await release.wait()

    server = HealthServer("worker", LOOPBACK, 0, [("database", slow)])
    async with server:
        base = f"http://{LOOPBACK}:{server.port}"
        async with httpx.AsyncClient(timeout=10) as http:
            waiting = [
                asyncio.create_task(http.get(f"{base}/readyz")) for _ in range(MAX_CONNECTIONS)
            ]
            while server._active < MAX_CONNECTIONS:
                await asyncio.sleep(0.01)
            with pytest.raises(httpx.TransportError):
                await http.get(f"{base}/healthz")  # the ninth: closed unanswered
            release.set()
            answers = await asyncio.gather(*waiting)
            assert [a.status_code for a in answers] == [200] * MAX_CONNECTIONS
            assert calls == 1
            head = await http.head(f"{base}/healthz")
            assert head.status_code == 200 and head.content == b""
    taken = HealthServer("worker", LOOPBACK, server.port, [])
    async with HealthServer("worker", LOOPBACK, 0, []) as holder:
        taken.port = holder.port
        with pytest.raises(ConfigError, match="REPORUN_HEALTH_PORT: cannot listen on"):
            await taken.start()


async def test_local_workers_do_not_inherit_the_probe_port(
    settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An observer (or `serve`) with REPORUN_HEALTH_PORT set starts local workers that do not
    try to listen on its port: all of them come up."""
    monkeypatch.setenv("REPORUN_HEALTH_PORT", str(free_port()))
    env = {"REPORUN_DATA_DIR": str(settings.data_dir), "REPORUN_DATABASE_URL": settings.db_url}
    scaler = LocalScaler(env, drain_grace=1)
    try:
        await scaler.add(2)
        deadline = time.monotonic() + 30
        while len(await store.list_workers()) < 2:
            assert time.monotonic() < deadline, "two workers never reported"
            await asyncio.sleep(0.1)
        assert len(await scaler.members()) == 2
    finally:
        await scaler.close()


async def test_readyz_names_what_is_down_and_bad_requests_get_an_answer(tmp_path: Path) -> None:
    """A database that does not answer: 503 naming it; probes of other paths and methods, or
    a request that is not HTTP, get a status, never a hang."""
    closed = free_port()
    store = Store.open(f"postgresql+asyncpg://nobody@{LOOPBACK}:{closed}/nowhere")
    server = HealthServer("worker", LOOPBACK, 0, [("database", store.ping)])
    try:
        async with server:
            base = f"http://{LOOPBACK}:{server.port}"
            async with httpx.AsyncClient(timeout=10) as http:
                down = await http.get(f"{base}/readyz")
                assert down.status_code == 503
                assert down.json()["status"] == "not ready: database"
                assert down.json()["checks"]["database"].startswith("down: ")
                assert (await http.get(f"{base}/healthz")).status_code == 200
                assert (await http.get(f"{base}/other")).status_code == 404
                assert (await http.post(f"{base}/healthz")).status_code == 405
            reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
            writer.write(b"hello\r\n\r\n")
            assert (await asyncio.wait_for(reader.read(100), 10)).startswith(b"HTTP/1.1 400 ")
            writer.close()
    finally:
        await store.close()


async def test_the_advisory_scaler_records_what_it_would_do_once(store: Store) -> None:
    """REPORUN_SCALER=none: the workers are whoever sends heartbeats; a decision is recorded
    when the count asked for changes, and nothing is started."""
    for number in (1, 2):
        await store.worker_heartbeat(
            f"w{number}", host=f"pod-{number}", pid=1, state="idle", current_job=None
        )
    queue = SqlQueue(store, QueueConfig(lease_seconds=30, max_attempts=3, poll_interval=0.05))
    scaler = AdvisoryScaler(store, alive_within=30)
    observer = Observer(
        store=store,
        queue=queue,
        scaler=scaler,
        policy=PolicySettings(min_workers=4, max_workers=8, cooldown=0),
    )
    first = await observer.tick()
    assert (first.direction, first.desired) == ("out", 4)
    await observer.tick()  # the same advice again: not recorded twice
    assert len(await scaler.members()) == 2
    [decision] = await store.scaling.decisions()
    assert (decision.scaler, decision.actual, decision.desired) == ("none", 2, 4)
    # The load went away before the pods came: the count held is the advice now, recorded.
    observer.policy = PolicySettings(min_workers=2, max_workers=2, cooldown=0)
    assert ((held := await observer.tick()).direction, held.desired) == ("hold", 2)
    assert [(d.direction, d.desired) for d in await store.scaling.decisions(limit=1)] == [
        ("hold", 2)
    ]
    observer.policy = PolicySettings(min_workers=1, max_workers=1, cooldown=0)
    assert (await observer.tick()).desired == 1
    newest = await store.scaling.decisions(limit=1)
    assert [(d.direction, d.desired) for d in newest] == [("in", 1)]
    assert len(await scaler.members()) == 2  # nobody was retired
    assert len(await store.scaling.decisions()) == 3
