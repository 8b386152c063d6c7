"""A running job's events, live, from `reporun serve`: what was printed before the stream
opened comes first, new lines follow, and a stream cut mid-job resumes from its last event's
id with no line lost or doubled; `reporun logs --follow` does the same through a cut proxy."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from typing import Any

import httpx

from tests.harness.git import GitServer
from tests.harness.proxy import CutProxy
from tests.harness.server import REPORUN

# 100 lines at once, then 100 more, one every 20 ms.
SCRIPT = (
    "#!/bin/sh\n"
    'i=1; while [ $i -le 100 ]; do echo "line $i"; i=$((i+1)); done\n'
    "sleep 1\n"
    'while [ $i -le 200 ]; do echo "line $i"; i=$((i+1)); sleep 0.02; done\n'
)
WANTED = "".join(f"line {i}\n" for i in range(1, 201))
FIRST = "".join(f"line {i}\n" for i in range(1, 101))


def read_events(response: httpx.Response, until: Any) -> tuple[list[dict[str, str]], str]:
    """Events off the open stream until `until(text so far, event)` says stop."""
    found: list[dict[str, str]] = []
    text = ""
    event: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "event" in event:
                found.append(event)
                if event["event"] == "log":
                    text += json.loads(event["data"])
                if until(text, event):
                    break
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            event[name] = value
    return found, text


def test_a_stream_opened_late_and_cut_loses_and_doubles_nothing(
    served: dict, git_server: GitServer
) -> None:
    base = f"http://127.0.0.1:{served['port']}"
    headers = {"Authorization": f"Bearer {served['token']}"}
    repo = git_server.make_repo({"run.sh": SCRIPT})
    with httpx.Client(base_url=base, headers=headers, timeout=30, trust_env=False) as http:
        job_id = http.post("/v1/jobs", json={"repo": repo}).json()["id"]
        deadline = time.monotonic() + 60
        while http.get(f"/v1/jobs/{job_id}").json()["log_bytes"] < len(FIRST):
            assert time.monotonic() < deadline, "the first 100 lines never came"
            time.sleep(0.05)
        # Opened after 100 lines: all of them first, then the new ones as they come.
        with http.stream("GET", f"/v1/jobs/{job_id}/events") as first:
            assert first.headers["content-type"].startswith("text/event-stream")
            events, before = read_events(first, lambda text, _: "line 130\n" in text)
        assert events[0]["event"] == "status"
        assert json.loads(events[0]["data"])["status"] == "running"
        assert before.startswith(FIRST) and "line 130\n" in before
        # The connection is gone; the next one says where the last one ended.
        last = next(e["id"] for e in reversed(events) if e["event"] == "log")
        with http.stream(
            "GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": last}
        ) as second:
            events, after = read_events(second, lambda _, event: event["event"] == "end")
        assert events[-1]["event"] == "end"
        assert json.loads(events[-1]["data"])["status"] == "succeeded"
        assert before + after == WANTED


def test_logs_follow_through_a_proxy_that_cuts_it_loses_and_doubles_nothing(
    served: dict, git_server: GitServer
) -> None:
    """`reporun logs --follow` through a proxy that drops every connection mid-job: the CLI
    reconnects with the last event's id and prints the log once, whole."""
    repo = git_server.make_repo({"run.sh": SCRIPT})
    proxy = CutProxy(int(served["port"]))
    base = f"http://127.0.0.1:{served['port']}"
    headers = {"Authorization": f"Bearer {served['token']}"}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=30, trust_env=False) as http:
            job_id = http.post("/v1/jobs", json={"repo": repo}).json()["id"]
            env = {**served["env"], "REPORUN_URL": proxy.url, "REPORUN_TOKEN": served["token"]}
            with (
                tempfile.TemporaryFile() as out,
                subprocess.Popen(
                    [*REPORUN, "logs", job_id, "--follow"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
                ) as follow,
            ):
                deadline = time.monotonic() + 60
                while out.tell() < len(FIRST) + len("line 101\n"):
                    assert follow.poll() is None, "the CLI exited early"
                    assert time.monotonic() < deadline, "the CLI printed too little"
                    time.sleep(0.05)
                assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
                assert proxy.cut() >= 1
                assert follow.wait(timeout=60) == 0
                out.seek(0)
                assert out.read().decode() == WANTED
    finally:
        proxy.close()
