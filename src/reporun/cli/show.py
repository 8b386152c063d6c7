"""How the CLI shows things to a person: tables, a job's status block, colours and times.

Pure functions of the data, the current time and whether to colour; the commands decide where
the text goes. Times are shown in the local zone: tables say how long ago ("3 min ago"), as
gh and docker do; a job's block gives the local time with its zone and how long ago.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Any, NamedTuple, TextIO

# The job states (reporun.jobs.JobStatus, which the CLI does not import: it brings pydantic).
STATES = ("queued", "running", "succeeded", "failed", "timed_out", "cancelled", "error")
TERMINAL = frozenset(STATES[2:])

RESET = "\x1b[0m"
GREEN, RED, YELLOW, CYAN, DIM = "\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[36m", "\x1b[2m"
STYLES = {
    "queued": YELLOW,
    "running": CYAN,
    "succeeded": GREEN,
    "failed": RED,
    "timed_out": RED,
    "error": RED,
    "cancelled": DIM,
    # Workers.
    "busy": CYAN,
    "idle": GREEN,
    "draining": YELLOW,
    "out": CYAN,
    "in": YELLOW,
}
REPO_WIDTH = 40  # a repository column on a terminal shortens longer names
ELLIPSIS = "…"


# Colour -------------------------------------------------------------------------------------
def use_colour(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour on a terminal; never under NO_COLOR (https://no-color.org), always under
    FORCE_COLOR (either set to anything but the empty string); none for TERM=dumb."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and env.get("TERM") != "dumb"


def paint(text: str, style: str | None, colour: bool) -> str:
    return f"{style}{text}{RESET}" if colour and style and text else text


class Cell(NamedTuple):
    """Text in a table, and the style it is shown in on a terminal."""

    text: str
    style: str | None = None


def state(name: str | None) -> Cell:
    return Cell(name or "-", STYLES.get(name or ""))


def table(header: Sequence[str], rows: Sequence[Sequence[str | Cell]], colour: bool) -> str:
    """A header row and aligned columns, each as wide as its content, two spaces apart; the
    last column unpadded."""
    cells = [[c if isinstance(c, Cell) else Cell(c) for c in row] for row in rows]
    widths = [len(h) for h in header]
    for row in cells:
        widths = [max(w, len(c.text)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(_pad(Cell(h), w, colour) for h, w in zip(header, widths, strict=True))]
    lines += [
        "  ".join(_pad(c, w, colour) for c, w in zip(row, widths, strict=True)) for row in cells
    ]
    return "\n".join(line.rstrip() for line in lines)


def _pad(cell: Cell, width: int, colour: bool) -> str:
    return paint(cell.text, cell.style, colour) + " " * (width - len(cell.text))


# Times ------------------------------------------------------------------------------------------
def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time from the API (`...Z` or `+00:00`)."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "-"
    seconds = (now - then).total_seconds()
    if seconds < 1:
        return "just now"
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h ago"
    days = seconds // 86400
    if days < 30:
        return f"{days:.0f} day{'s' if days >= 2 else ''} ago"
    return f"on {then.astimezone().date().isoformat()}"


def local_time(then: datetime, zone: tzinfo | None = None) -> str:
    """`2026-05-09 14:02:11 CEST`: the local zone (or `zone`), named."""
    shown = then.astimezone(zone)
    return f"{shown:%Y-%m-%d %H:%M:%S} {shown.tzname() or shown.strftime('%z')}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def elapsed(job: Mapping[str, Any], now: datetime) -> float | None:
    """How long the job ran, or has been running."""
    if job.get("run_seconds") is not None:
        return float(job["run_seconds"])
    started = parse_time(job.get("started_at"))
    if started is not None and job.get("status") == "running":
        return max(0.0, (now - started).total_seconds())
    return None


# Repositories ---------------------------------------------------------------------------------
def shorten_repo(repo: str, width: int | None = REPO_WIDTH, home: str | None = None) -> str:
    """`github.com/owner/name` for `https://github.com/owner/name.git`, `~/src/x` for a path
    under `home`; past `width` characters, the host (or `~`) and as many trailing parts as fit,
    the middle left out."""
    home = os.path.expanduser("~") if home is None else home
    short = repo.removeprefix("https://").rstrip("/").removesuffix(".git")
    if home not in ("", "/") and (short == home or short.startswith(home.rstrip("/") + "/")):
        short = "~" + short[len(home.rstrip("/")) :]
    if width is None or len(short) <= width:
        return short
    head, _, rest = short.partition("/")
    parts = rest.split("/")
    kept: list[str] = []
    while parts and len(head) + 3 + len("/".join([parts[-1], *kept])) <= width:
        kept.insert(0, parts.pop())
    if not kept:
        return ELLIPSIS + short[-(width - 1) :]
    return f"{head}/{ELLIPSIS}/{'/'.join(kept)}"


# What the commands print ------------------------------------------------------------------------
def status_text(job: Mapping[str, Any]) -> str:
    """`failed (exit code 3)`, `error: worker lost`, `succeeded`: the state with its exit code
    and reason, neither said twice."""
    text = str(job["status"])
    code = job.get("exit_code")
    if code is not None and job["status"] != "succeeded":
        text += f" (exit code {code})"
    reason = job.get("reason")
    if reason and reason != f"exit code {code}":
        text += f": {reason}"
    return text


def jobs_table(
    items: Sequence[Mapping[str, Any]], now: datetime, colour: bool, repo_width: int | None
) -> str:
    rows = [
        [
            job["id"],
            state(job["status"]),
            job["owner"],
            shorten_repo(job["repo"], repo_width),
            ago(parse_time(job["created_at"]), now),
            duration(elapsed(job, now)),
        ]
        for job in items
    ]
    header = ("ID", "STATUS", "OWNER", "REPOSITORY", "CREATED", "DURATION")
    return table(header, rows, colour)


def workers_table(items: Sequence[Mapping[str, Any]], now: datetime, colour: bool) -> str:
    rows = [
        [
            worker["id"],
            state(worker["state"]),
            worker.get("current_job") or "-",
            ago(parse_time(worker["started_at"]), now),
            ago(parse_time(worker["last_heartbeat"]), now),
        ]
        for worker in items
    ]
    return table(("ID", "STATE", "JOB", "STARTED", "HEARTBEAT"), rows, colour)


def scaling_report(report: Mapping[str, Any], now: datetime, colour: bool) -> str:
    desired = report["desired"] if report["desired"] is not None else "-"
    lines = [f"workers: {report['actual']} alive, {desired} desired"]
    rows = [
        [
            ago(parse_time(decision["at"]), now),
            state(decision["direction"]),
            f"{decision['actual']} -> {decision['desired']}",
            decision["reason"],
        ]
        for decision in report["decisions"]
    ]
    if rows:
        lines += ["", table(("WHEN", "SCALE", "WORKERS", "REASON"), rows, colour)]
    return "\n".join(lines)


def status_block(
    job: Mapping[str, Any], now: datetime, colour: bool, zone: tzinfo | None = None
) -> str:
    """A job as a short block of `label  value` lines: what ran, where, and when."""
    created = parse_time(job.get("created_at"))
    started = parse_time(job.get("started_at"))
    finished = parse_time(job.get("finished_at"))

    def when(at: datetime | None, note: str = "") -> str | None:
        if at is None:
            return None
        return f"{local_time(at, zone)} ({ago(at, now)}){note}"

    commit = job.get("commit")
    ref = job.get("ref") or "default branch"
    waited = job.get("wait_seconds")
    if waited is None and created is not None and job.get("status") == "queued":
        waited = max(0.0, (now - created).total_seconds())
    wait_note = f", queued for {duration(waited)}" if started and waited is not None else ""
    ran = elapsed(job, now)
    run_note = f", ran for {duration(ran)}" if finished and ran is not None else ""
    lines: list[tuple[str, str | None]] = [
        ("id", job["id"]),
        ("status", paint(status_text(job), STYLES.get(job["status"]), colour)),
        ("repository", job.get("repo")),
        ("ref", f"{ref} at {commit[:12]}" if commit else ref),
        ("command", job.get("command") or "(from the repository)"),
        ("owner", job.get("owner")),
        ("worker", job.get("worker") or "-"),
        ("attempts", str(job.get("attempts", 0))),
        ("created", when(created)),
        ("started", when(started, wait_note) or _waiting(job, waited)),
        ("finished", when(finished, run_note) or _running(job, ran)),
    ]
    if not job.get("runtime") and job.get("runtime_requested"):
        lines.append(("runtime", f"{job['runtime_requested']} (asked for)"))
    for key in ("runtime", "network", "setup"):
        if job.get(key):
            lines.append((key, str(job[key])))
    if job.get("phases"):
        shown = [
            f"{k.replace('_', ' ')} {_phase_time(v)}"
            for k, v in job["phases"].items()
            if v is not None
        ]
        lines.append(("phases", ", ".join(shown) or "-"))
    if job.get("log_bytes") is not None:
        cut = " (truncated: the rest was dropped)" if job.get("log_truncated") else ""
        lines.append(("log", f"{_size(job['log_bytes'])}{cut}"))
    if job.get("cancel_requested") and job.get("status") not in TERMINAL:
        lines.append(("cancel", paint("requested", YELLOW, colour)))
    width = max(len(label) for label, value in lines if value is not None)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in lines if value is not None)


def _phase_time(seconds: float) -> str:
    """A phase's time: most take milliseconds."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else duration(seconds)


def _waiting(job: Mapping[str, Any], waited: float | None) -> str | None:
    if job.get("status") == "queued":
        return f"not yet (queued for {duration(waited)})"
    return None


def _running(job: Mapping[str, Any], ran: float | None) -> str | None:
    if job.get("status") == "running":
        return f"not yet (running for {duration(ran)})"
    return None


def _size(count: int) -> str:
    if count < 1024:
        return "1 byte" if count == 1 else f"{count} bytes"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):  # noqa: B007  # the last one is kept
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"
