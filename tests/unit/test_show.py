"""reporun.cli.show: the CLI's tables, status block, colours and times, as pure functions."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from reporun.cli import show
from reporun.jobs import TERMINAL, JobStatus

NOW = datetime(2026, 5, 9, 12, 0, 0, tzinfo=UTC)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def stamp(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def job(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "0b5f3c6e-6d0e-4d43-9a57-3f0e2f1c9a11",
        "owner": "alice",
        "repo": "https://github.com/acme/widgets.git",
        "ref": None,
        "commit": "82da4962d97bb09606b0cb7cd138cadc61e9edc7",
        "command": None,
        "status": "succeeded",
        "exit_code": 0,
        "reason": None,
        "attempts": 1,
        "worker": "vm-14044-6f53d4",
        "created_at": stamp(200),
        "started_at": stamp(190),
        "finished_at": stamp(100),
        "wait_seconds": 10.0,
        "run_seconds": 90.0,
        "log_bytes": 2048,
        "log_truncated": False,
        "cancel_requested": False,
    }
    return {**base, **fields}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_cli_knows_the_job_states_without_importing_them() -> None:
    assert set(show.STATES) == {s.value for s in JobStatus}
    assert {s.value for s in TERMINAL} == show.TERMINAL
    assert set(show.STATES) <= set(show.STYLES)


@pytest.mark.parametrize(
    ("tty", "env", "expected"),
    [
        (True, {}, True),
        (False, {}, False),
        (True, {"NO_COLOR": "1"}, False),
        (True, {"NO_COLOR": ""}, True),  # no-color.org: set and not empty
        (False, {"FORCE_COLOR": "1"}, True),
        (True, {"NO_COLOR": "1", "FORCE_COLOR": "1"}, False),  # NO_COLOR wins, as in Rich
        (True, {"TERM": "dumb"}, False),
    ],
)
def test_colour_only_on_a_terminal_and_never_under_no_color(
    tty: bool, env: dict[str, str], expected: bool
) -> None:
    stream = Tty() if tty else io.StringIO()
    assert show.use_colour(stream, env) is expected


def test_a_table_has_a_header_and_columns_sized_to_their_content() -> None:
    rows = [["a", show.state("failed"), "x"], ["longer", show.state("succeeded"), "yy"]]
    plain = show.table(("NAME", "STATE", "X"), rows, colour=False)
    assert plain.splitlines() == [
        "NAME    STATE      X",
        "a       failed     x",
        "longer  succeeded  yy",
    ]
    coloured = show.table(("NAME", "STATE", "X"), rows, colour=True)
    assert show.RED + "failed" + show.RESET in coloured
    assert show.GREEN + "succeeded" + show.RESET in coloured
    assert ANSI.sub("", coloured) == plain  # colour never moves a column


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.2, "just now"),
        (-3, "just now"),
        (42, "42 s ago"),
        (125, "2 min ago"),
        (3 * 3600 + 5, "3 h ago"),
        (86400 * 1.5, "1 day ago"),
        (86400 * 3, "3 days ago"),
    ],
)
def test_ago(seconds: float, expected: str) -> None:
    assert show.ago(NOW - timedelta(seconds=seconds), NOW) == expected


def test_ago_of_long_ago_is_a_date_and_of_nothing_a_dash() -> None:
    assert show.ago(NOW - timedelta(days=90), NOW).startswith("on 2026-02-")
    assert show.ago(None, NOW) == "-"


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (None, "-"),
        (0.042, "0.04 s"),
        (3.14, "3.1 s"),
        (60, "1 min"),
        (184, "3 min 4 s"),
        (3600 * 2 + 60 * 5, "2 h 5 min"),
        (7200, "2 h"),
    ],
)
def test_duration(seconds: float | None, expected: str) -> None:
    assert show.duration(seconds) == expected


def test_local_time_names_its_zone() -> None:
    at = datetime(2026, 5, 9, 12, 0, 0, tzinfo=UTC)
    assert show.local_time(at, UTC) == "2026-05-09 12:00:00 UTC"
    plus_two = timezone(timedelta(hours=2), "CEST")
    assert show.local_time(at, plus_two) == "2026-05-09 14:00:00 CEST"
    assert show.local_time(at, timezone(timedelta(hours=-3))).endswith("09:00:00 UTC-03:00")


def test_parse_time_reads_the_apis_times() -> None:
    assert show.parse_time("2026-05-09T12:00:00.5Z") == NOW + timedelta(seconds=0.5)
    assert show.parse_time("2026-05-09T12:00:00+00:00") == NOW
    assert show.parse_time(None) is None


@pytest.mark.parametrize(
    ("repo", "width", "expected"),
    [
        ("https://github.com/acme/widgets.git", 40, "github.com/acme/widgets"),
        ("https://github.com/acme/widgets/", 40, "github.com/acme/widgets"),
        ("git://git.example.org/a/b", 40, "git://git.example.org/a/b"),
        ("/home/ann/src/project", 40, "~/src/project"),
        ("/home/annex/x", 40, "/home/annex/x"),
        (
            "https://gitlab.example.com/group/subgroup/deeper/still-deeper/project.git",
            40,
            "gitlab.example.com/…/project",
        ),
        (
            "https://gitlab.example.com/group/subgroup/deeper/still-deeper/project.git",
            None,
            "gitlab.example.com/group/subgroup/deeper/still-deeper/project",
        ),
        ("https://h.io/" + "x" * 60, 20, "…" + "x" * 19),
    ],
)
def test_shorten_repo(repo: str, width: int | None, expected: str) -> None:
    shortened = show.shorten_repo(repo, width, home="/home/ann")
    assert shortened == expected
    assert width is None or len(shortened) <= width


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "succeeded"),
        ({"status": "failed", "exit_code": 3, "reason": "exit code 3"}, "failed (exit code 3)"),
        (
            {"status": "failed", "exit_code": None, "reason": "no entry point"},
            "failed: no entry point",
        ),
        (
            {"status": "error", "exit_code": None, "reason": "worker lost"},
            "error: worker lost",
        ),
        (
            {"status": "timed_out", "exit_code": 137, "reason": "timed out after 5 s"},
            "timed_out (exit code 137): timed out after 5 s",
        ),
    ],
)
def test_status_text_says_the_exit_code_and_reason_once(
    fields: dict[str, Any], expected: str
) -> None:
    assert show.status_text(job(**fields)) == expected


def test_jobs_table() -> None:
    items = [
        job(),
        job(
            id="1c0d1c5e-0000-4000-8000-000000000002",
            status="running",
            owner="bob",
            repo="/srv/repos/x",
            created_at=stamp(30),
            started_at=stamp(20),
            finished_at=None,
            run_seconds=None,
        ),
        job(
            id="1c0d1c5e-0000-4000-8000-000000000003",
            status="queued",
            started_at=None,
            finished_at=None,
            run_seconds=None,
            created_at=stamp(5),
        ),
    ]
    lines = show.jobs_table(items, NOW, colour=False, repo_width=40).splitlines()
    assert lines[0].split() == ["ID", "STATUS", "OWNER", "REPOSITORY", "CREATED", "DURATION"]
    assert lines[1].split() == [
        "0b5f3c6e-6d0e-4d43-9a57-3f0e2f1c9a11",
        "succeeded",
        "alice",
        "github.com/acme/widgets",
        "3",
        "min",
        "ago",
        "1",
        "min",
        "30",
        "s",
    ]
    assert "running" in lines[2] and "30 s ago" in lines[2] and lines[2].endswith("20.0 s")
    assert lines[3].split()[-4:] == ["5", "s", "ago", "-"]
    # Every column starts at the same place on every line.
    starts = {line.index("alice") for line in (lines[1], lines[3])}
    assert len(starts) == 1 and lines[0].index("OWNER") in starts


def test_workers_table_and_scaling_report() -> None:
    workers = [
        {
            "id": "vm-1-abc",
            "host": "vm",
            "pid": 1,
            "state": "busy",
            "current_job": "0b5f3c6e-6d0e-4d43-9a57-3f0e2f1c9a11",
            "started_at": stamp(600),
            "last_heartbeat": stamp(2),
        }
    ]
    lines = show.workers_table(workers, NOW, colour=False).splitlines()
    assert lines[0].split() == ["ID", "STATE", "JOB", "STARTED", "HEARTBEAT"]
    assert lines[1].split()[:3] == ["vm-1-abc", "busy", "0b5f3c6e-6d0e-4d43-9a57-3f0e2f1c9a11"]
    assert lines[1].endswith("10 min ago  2 s ago")

    report = {
        "actual": 1,
        "desired": 2,
        "decisions": [
            {"at": stamp(65), "direction": "out", "actual": 1, "desired": 2, "reason": "slow"}
        ],
    }
    text = show.scaling_report(report, NOW, colour=False).splitlines()
    assert text[0] == "workers: 1 alive, 2 desired"
    assert text[2].split() == ["WHEN", "SCALE", "WORKERS", "REASON"]
    assert text[3].split() == ["1", "min", "ago", "out", "1", "->", "2", "slow"]
    empty = {"actual": 0, "desired": None, "decisions": []}
    assert show.scaling_report(empty, NOW, colour=False) == "workers: 0 alive, - desired"


def block(job_fields: dict[str, Any], colour: bool = False) -> dict[str, str]:
    text = show.status_block(job(**job_fields), NOW, colour, zone=UTC)
    rows = [line.split(None, 1) for line in text.splitlines()]
    return {label: value for label, value in rows}


def test_status_block_of_a_finished_job() -> None:
    shown = block({"status": "failed", "exit_code": 3, "reason": "exit code 3", "ref": "main"})
    assert list(shown) == [
        "id",
        "status",
        "repository",
        "ref",
        "command",
        "owner",
        "worker",
        "attempts",
        "created",
        "started",
        "finished",
        "log",
    ]
    assert shown["status"] == "failed (exit code 3)"
    assert shown["repository"] == "https://github.com/acme/widgets.git"
    assert shown["ref"] == "main at 82da4962d97b"
    assert shown["command"] == "(from the repository)"
    assert shown["created"] == "2026-05-09 11:56:40 UTC (3 min ago)"
    assert shown["started"] == "2026-05-09 11:56:50 UTC (3 min ago), queued for 10.0 s"
    assert shown["finished"] == "2026-05-09 11:58:20 UTC (1 min ago), ran for 1 min 30 s"
    assert shown["log"] == "2.0 KiB"


def test_status_block_of_a_queued_job_asked_to_cancel() -> None:
    shown = block(
        {
            "status": "queued",
            "exit_code": None,
            "commit": None,
            "worker": None,
            "started_at": None,
            "finished_at": None,
            "wait_seconds": None,
            "run_seconds": None,
            "attempts": 0,
            "command": "make test",
            "cancel_requested": True,
            "log_bytes": 0,
            "log_truncated": False,
        }
    )
    assert shown["ref"] == "default branch"
    assert shown["command"] == "make test"
    assert shown["worker"] == "-"
    assert shown["started"] == "not yet (queued for 3 min 20 s)"
    assert "finished" not in shown
    assert shown["cancel"] == "requested"
    assert shown["log"] == "0 bytes"


def test_status_block_of_a_running_job_with_a_cut_log_and_phases() -> None:
    shown = block(
        {
            "status": "running",
            "exit_code": None,
            "finished_at": None,
            "run_seconds": None,
            "log_bytes": 1048576,
            "log_truncated": True,
            "runtime": "host",
            "phases": {"wait": 10.0, "fetch": 0.5, "sandbox_start": 0.0123, "run": None},
        }
    )
    assert shown["finished"] == "not yet (running for 3 min 10 s)"
    assert shown["log"] == "1.0 MiB (truncated: the rest was dropped)"
    assert shown["runtime"] == "host"
    assert shown["phases"] == "wait 10.0 s, fetch 500 ms, sandbox start 12 ms"


def test_status_block_colours_only_the_status() -> None:
    plain = show.status_block(job(status="failed"), NOW, False, zone=UTC)
    coloured = show.status_block(job(status="failed"), NOW, True, zone=UTC)
    assert ANSI.sub("", coloured) == plain
    assert f"{show.RED}failed" in coloured and coloured.count("\x1b[") == 2
