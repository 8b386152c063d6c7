"""A log cut at its limit, as the CLI shows it: `reporun logs` and `reporun logs --follow`
against `reporun serve`, ending with the marker line."""

from __future__ import annotations

import subprocess
from pathlib import Path

from reporun.worker.process import cut_marker
from tests.harness.git import GitServer
from tests.harness.processes import Processes, require_tool
from tests.harness.server import REPORUN, Server

LIMIT = 4000


def test_logs_and_follow_end_with_the_cut_marker(
    tmp_path: Path, processes: Processes, git_server: GitServer
) -> None:
    require_tool("bwrap", "the job sandbox")
    server = Server(processes, tmp_path / "data").serve(tmp_path / "serve.log")
    api = server.blocking_client()
    try:
        long = git_server.make_repo({"run.sh": "#!/bin/sh\nseq 100000\nsleep 2\n"}, name="long")
        short = git_server.make_repo({"run.sh": "#!/bin/sh\nseq 100\n"}, name="short")
        job = api.submit(long, limits={"log": LIMIT})["id"]
        api.wait(job, {"running"})
        # Followed from while it runs, to its end.
        follow = subprocess.run(
            [*REPORUN, "logs", job, "--follow"],
            env=server.env,
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        under = api.wait(api.submit(short, limits={"log": LIMIT})["id"])
        plain = server.cli("logs", job)
        under_log = server.cli("logs", under["id"])
    finally:
        api.close()
    kept = "".join(f"{i}\n" for i in range(1, 100_001)).encode()[:LIMIT]
    expected = kept + b"\n" + cut_marker(LIMIT)
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout == expected, follow.stdout[-300:]
    assert plain.returncode == 0 and plain.stdout.encode() == expected
    assert plain.stdout.splitlines()[-1] == (
        "[reporun: log cut at 3.9 KiB (the job's log limit); "
        "the rest of its output was dropped, the job went on]"
    )
    assert under["log_truncated"] is False
    assert under_log.stdout == "".join(f"{i}\n" for i in range(1, 101))
    assert "reporun:" not in under_log.stdout
