"""GET /v1/jobs/{id}/events: a job's status and log as Server-Sent Events, resumable by byte
offset (the live half, with a worker and a cut connection, is in tests/acceptance)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest

from reporun.jobs import JobSpec, JobStatus, Limits, Outcome, Start
from reporun.store import Store
from tests.integration.conftest import Api

LIMITS = Limits(timeout=60, memory=256 << 20, processes=32, log=1 << 20, disk=64 << 20)
# A log whose chunks cut a UTF-8 character in two, and hold a byte that is no UTF-8 at all.
CHUNKS = (b"line one\n", b"caf\xc3", b"\xa9 \xff\n", b"last\r\n")


def events(body: str) -> list[dict[str, Any]]:
    """The stream's events, as the EventSource of a browser would take them."""
    found = []
    for block in body.split("\n\n"):
        event: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":") or not line:
                continue
            name, _, value = line.partition(": ")
            event[name] = value
        if "event" in event:
            found.append(event)
    return found


def log_of(found: list[dict[str, Any]]) -> bytes:
    text = "".join(json.loads(e["data"]) for e in found if e["event"] == "log")
    return text.encode("utf-8", "surrogateescape")


async def ended_job(
    store: Store, owner: str = "alice", *, earlier: bytes | None = None
) -> uuid.UUID:
    """A job that wrote CHUNKS and succeeded (`earlier`: what a first run wrote before its
    log was started over)."""
    job = await store.create_job(JobSpec(repo="https://example.org/x.git", limits=LIMITS), owner)
    claimed = await store.runs.claim("w1", lease=timedelta(seconds=30), job_id=job.id)
    assert claimed is not None
    await store.runs.started(claimed, "w1", Start("0" * 40, "./run.sh"))
    if earlier is not None:
        assert await store.logs.append(job.id, 0, earlier, worker="w1", attempt=1)
        assert await store.logs.reset(job.id, worker="w1", attempt=1)
    for seq, data in enumerate(CHUNKS):
        assert await store.logs.append(job.id, seq, data, worker="w1", attempt=1)
    assert await store.runs.finish(claimed, "w1", Outcome(JobStatus.SUCCEEDED, exit_code=0))
    return job.id


async def test_an_ended_jobs_events_are_its_status_whole_log_and_end(
    api: Api, store: Store
) -> None:
    job_id = await ended_job(store)
    response = await api.client.get(f"/v1/jobs/{job_id}/events", headers=api.headers())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    found = events(response.text)
    assert found[0]["event"] == "status" and found[-1]["event"] == "end"
    assert json.loads(found[-1]["data"])["status"] == "succeeded"
    assert log_of(found) == b"".join(CHUNKS)
    # Each log event's id is the offset the log has reached; the cut character waits whole.
    ids = [int(e["id"].split("-")[1]) for e in found if e["event"] == "log"]
    assert ids == sorted(ids) and ids[-1] == sum(map(len, CHUNKS))
    assert "caf\u00e9" in "".join(json.loads(e["data"]) for e in found if e["event"] == "log")


async def test_resuming_from_any_offset_loses_and_doubles_nothing(api: Api, store: Store) -> None:
    job_id = await ended_job(store)
    whole = b"".join(CHUNKS)
    for offset in range(len(whole) + 1):
        response = await api.client.get(
            f"/v1/jobs/{job_id}/events",
            headers={**api.headers(), "Last-Event-ID": str(offset)},
        )
        assert log_of(events(response.text)) == whole[offset:], offset
    tail = await api.client.get(f"/v1/jobs/{job_id}/events?tail=6", headers=api.headers())
    assert log_of(events(tail.text)) == b"last\r\n"


async def test_bad_requests_and_other_users_jobs(api: Api, store: Store) -> None:
    job_id = await ended_job(store)
    path = f"/v1/jobs/{job_id}/events"
    bad = await api.client.get(path, headers={**api.headers(), "Last-Event-ID": "soon"})
    assert bad.status_code == 422 and bad.json()["field"] == "last-event-id", bad.text
    negative = await api.client.get(f"{path}?offset=-1", headers=api.headers())
    assert negative.status_code == 422 and negative.json()["field"] == "offset"
    mallory = await api.client.get(path, headers=api.headers("mallory"))
    assert mallory.status_code == 404
    admin = await api.client.get(path, headers=api.headers("root", "admin"))
    assert admin.status_code == 200
    assert (await api.client.get(path)).status_code == 401


async def test_a_log_started_over_is_resumed_from_its_start_after_a_reset(
    api: Api, store: Store
) -> None:
    """An id of the log before it was started over: `reset`, then the new log whole; an id
    of the new log: from there. The job's end fully sent: 204, so a browser stops."""
    job_id = await ended_job(store, earlier=b"the first run's output\n")
    path = f"/v1/jobs/{job_id}/events"
    old = await api.client.get(path, headers={**api.headers(), "Last-Event-ID": "0-10"})
    found = events(old.text)
    kinds = [e["event"] for e in found]
    assert kinds.index("reset") < kinds.index("log"), kinds
    assert log_of(found) == b"".join(CHUNKS)
    assert found[-1]["id"] == f"1-{sum(map(len, CHUNKS))}"
    # A fresh stream of a job whose log was started over before it opened: no reset.
    fresh = events((await api.client.get(path, headers=api.headers())).text)
    assert "reset" not in [e["event"] for e in fresh] and log_of(fresh) == b"".join(CHUNKS)
    new = await api.client.get(path, headers={**api.headers(), "Last-Event-ID": "1-9"})
    assert log_of(events(new.text)) == b"".join(CHUNKS)[9:]
    done = await api.client.get(path, headers={**api.headers(), "Last-Event-ID": found[-1]["id"]})
    assert done.status_code == 204


async def test_a_log_longer_than_a_page_of_the_store_comes_whole(
    api: Api, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream reads the store a page of chunks at a time (here pages of 2)."""
    from reporun.api import events as module

    monkeypatch.setattr(module, "PAGE", 2)
    job_id = await ended_job(store)
    for offset in (0, 5, 11):
        response = await api.client.get(
            f"/v1/jobs/{job_id}/events", headers={**api.headers(), "Last-Event-ID": str(offset)}
        )
        assert log_of(events(response.text)) == b"".join(CHUNKS)[offset:]
