"""The dashboard's pure parts: the submit form as the API's request, where sign-in may lead
back to, and the charts' numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reporun.web import charts
from reporun.web.forms import JobForm
from reporun.web.session import local_path

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_a_filled_form_is_the_apis_request() -> None:
    form = JobForm.of(
        {
            "repo": " https://example.org/a.git ",
            "ref": "main",
            "command": "make test",
            "timeout": "1_200",
            "limits.memory": "536870912",
            "env": "A=1\n\nB = two=2\n",
            "runtime": "",
            "unknown": "ignored",
        }
    )
    body = form.request()
    assert form.errors == {}
    assert body is not None
    assert (body.repo, body.ref, body.command, body.timeout) == (
        "https://example.org/a.git",
        "main",
        "make test",
        1200,
    )
    assert body.limits is not None and body.limits.memory == 536870912
    assert body.env == {"A": "1", "B": " two=2"}
    assert body.runtime is None and "unknown" not in form.values


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"timeout": "soon"}, "timeout"),
        ({"limits.memory": "lots"}, "limits.memory"),
        ({"env": "JUST_A_NAME"}, "env"),
        ({"env": "=value"}, "env"),
        ({"network": "everywhere"}, "network"),
    ],
)
def test_each_bad_field_gets_its_own_message(fields: dict[str, str], where: str) -> None:
    """What the API's model refuses; the ranges are the submission's (the browser tests)."""
    form = JobForm.of({"repo": "https://example.org/a.git", **fields})
    assert form.request() is None
    assert list(form.errors) == [where], form.errors
    assert form.errors[where].strip()


def test_errors_of_the_submission_land_beside_their_field_or_on_the_form() -> None:
    form = JobForm.of({})
    form.refuse("limits.disk", "too big")
    form.refuse("env.A", "reserved")
    form.refuse(None, "over your quota")
    form.refuse("repo", "first")
    form.refuse("repo", "second")  # the first message stays
    assert form.errors == {
        "limits.disk": "too big",
        "env": "reserved",
        "form": "over your quota",
        "repo": "first",
    }


@pytest.mark.parametrize(
    ("candidate", "kept"),
    [
        ("/jobs/123?status=failed", True),
        ("/workers", True),
        (None, False),
        ("", False),
        ("jobs", False),
        ("//evil.example/", False),
        ("/\\evil.example", False),
        ("https://evil.example/", False),
        ("/jobs\r\nSet-Cookie: x=1", False),
        ("javascript:alert(1)", False),
    ],
)
def test_sign_in_leads_back_only_to_this_servers_own_pages(
    candidate: str | None, kept: bool
) -> None:
    assert local_path(candidate) == (candidate if kept else "/jobs")


def test_queue_wait_percentiles_per_minute() -> None:
    waits = [(NOW - timedelta(minutes=1, seconds=30), float(w)) for w in range(1, 21)]
    waits.append((NOW - timedelta(minutes=90), 99.0))  # before the hour: left out
    p50, p95 = charts.wait_series(waits, NOW)
    assert len(p50.values) == 60 and p50.values[-2] == 10.0 and p95.values[-2] == 19.0
    assert p50.values[-1] is None and p50.values[0] is None


def test_finished_per_minute_and_the_drawing() -> None:
    done = [NOW - timedelta(seconds=s) for s in (5, 10, 70)]
    series = charts.finished_series(done, NOW)
    assert series.values[-1] == 2 and series.values[-2] == 1 and sum(series.values) == 3
    drawn = charts.svg("Jobs <finished>", "jobs a minute", [series])
    assert drawn.startswith("<svg") and drawn.endswith("</svg>")
    assert "Jobs &lt;finished&gt;" in drawn and "<script" not in drawn
    assert drawn.count("<polyline") == 1


@pytest.mark.parametrize(
    ("value", "top"), [(0, 1), (0.03, 0.05), (0.7, 1), (1.2, 2), (3, 5), (7, 10), (230, 250)]
)
def test_the_axis_tops_at_a_round_number(value: float, top: float) -> None:
    assert charts.nice_top(value) == pytest.approx(top)
