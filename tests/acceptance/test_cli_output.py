"""What a person reads from `jobs`, `status`, `workers` and `scaling` against `reporun serve`:
a header row and aligned columns, local times with their zone, "no jobs" rather than silence,
a hint when there are more, colour only where it belongs."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.harness.git import GitServer
from tests.harness.server import reporun

ANSI = re.compile(r"\x1b\[[0-9;]*m")
AGE = re.compile(r"just now|\d+ (s|min) ago")


def shape(table: str) -> list[list[str]]:
    """A table's cells, its relative times (which move between two calls) made alike."""
    return [AGE.sub("AGO", line).split() for line in ANSI.sub("", table).splitlines()]


def cli(env: dict[str, str], *args: str, **extra: str) -> tuple[str, str]:
    done = reporun(*args, env={**env, **extra})
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done.stdout, done.stderr


def test_empty_lists_say_so_on_stderr(served: dict[str, Any]) -> None:
    env = served["env"]
    assert cli(env, "jobs") == ("", "no jobs\n")
    assert cli(env, "jobs", "--status", "failed") == ("", "no failed jobs\n")
    assert cli(env, "jobs", "--json") == ("[]\n", "")
    out, _ = cli(env, "scaling")
    assert out.startswith("workers: ")


def test_tables_status_and_colour(served: dict[str, Any], git_server: GitServer) -> None:
    env = served["env"]
    good = git_server.make_repo({"run.sh": "#!/bin/sh\necho fine\n"})
    bad = git_server.make_repo({"run.sh": "#!/bin/sh\necho failing\nexit 4\n"})
    ids = [reporun("submit", repo, "--wait", env=env).stdout.split()[0] for repo in (good, bad)]
    ids.append(reporun("submit", good, "--wait", env=env).stdout.split()[0])

    out, err = cli(env, "jobs")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "OWNER", "REPOSITORY", "CREATED", "DURATION"]
    assert [line.split()[0] for line in lines[1:]] == ids[::-1]  # newest first
    assert [line.split()[1] for line in lines[1:]] == ["succeeded", "failed", "succeeded"]
    assert all(line.index("admin") == lines[0].index("OWNER") for line in lines[1:])
    assert AGE.search(lines[1]) and err == "" and not ANSI.search(out)  # piped: no colour

    coloured, _ = cli(env, "jobs", FORCE_COLOR="1")
    assert "\x1b[31mfailed\x1b[0m" in coloured and "\x1b[32msucceeded\x1b[0m" in coloured
    assert shape(coloured) == shape(out)
    never = cli(env, "jobs", FORCE_COLOR="1", NO_COLOR="1")[0]
    assert shape(never) == shape(out) and not ANSI.search(never)

    page, hint = cli(env, "jobs", "--limit", "2")
    assert len(page.splitlines()) == 3 and "--all" in hint and "--limit" in hint
    every, quiet = cli(env, "jobs", "--limit", "2", "--all")
    assert shape(every) == shape(out) and quiet == ""
    failed, _ = cli(env, "jobs", "--status", "failed")
    assert [line.split()[0] for line in failed.splitlines()[1:]] == [ids[1]]

    block, _ = cli(env, "status", ids[1], TZ="Asia/Tokyo")
    fields = dict(line.split(None, 1) for line in block.splitlines())
    job = json.loads(cli(env, "status", ids[1], "--json")[0])  # --json as it was: the job
    assert job["id"] == ids[1] and job["exit_code"] == 4
    assert fields["id"] == ids[1]
    assert fields["status"] == "failed (exit code 4)"
    assert fields["repository"] == bad
    assert fields["ref"] == f"default branch at {job['commit'][:12]}"
    assert fields["worker"] == job["worker"] and fields["attempts"] == "1"
    assert fields["created"].endswith(")") and " JST (" in fields["created"]
    assert "queued for" in fields["started"] and "ran for" in fields["finished"]

    workers, _ = cli(env, "workers")
    rows = workers.splitlines()
    assert rows[0].split() == ["ID", "STATE", "JOB", "STARTED", "HEARTBEAT"]
    assert len(rows) == 3 and all(AGE.search(row) for row in rows[1:])
