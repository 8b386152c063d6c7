"""Commands that talk to a server: submit, jobs, status, logs, cancel, workers, scaling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, NoReturn

import typer

from reporun.cli.base import _job_id, app, fail, read_settings, run
from reporun.jobs import TERMINAL, JobStatus


# The client ------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def _client() -> AsyncIterator[Any]:
    from reporun.cli.client import ApiClient, find_token
    from reporun.cli.settings import ClientSettings

    settings = read_settings(ClientSettings)
    token = await find_token(settings)
    if token is None:
        fail(
            "no token: set REPORUN_TOKEN, run `reporun login` (OIDC), or start `reporun serve` "
            f"on {settings.url}, whose admin token the CLI finds by itself"
        )
    async with ApiClient(settings.url, token) as client:
        yield client


def _stop_following(job_id: str, doing: str = "following") -> NoReturn:
    """Ctrl-C while following or waiting: the job goes on; say how to get back to it."""
    fail(
        f"stopped {doing} job {job_id}; it goes on: `reporun logs -f {job_id}` follows it "
        f"again, `reporun cancel {job_id}` cancels it",
        130,
    )


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail(f"--env takes NAME=VALUE, not {pair!r}")
        env[name] = value
    return env


def _show(job: dict[str, Any]) -> str:
    """`ID STATUS (why)`: the reason, and the exit code unless the reason already says it."""
    details = [job["reason"]] if job.get("reason") else []
    code = job.get("exit_code")
    if code not in (None, 0) and not any(f"exit code {code}" in d for d in details):
        details.append(f"exit code {code}")
    if job.get("cancel_requested") and job["status"] not in TERMINAL:
        details.append("cancel requested")
    shown = f"{job['id']} {job['status']}"
    return f"{shown} ({'; '.join(details)})" if details else shown


async def _wait(client: Any, job_id: str, *, progress: bool = True) -> dict[str, Any]:
    """Poll until the job ends; a spinner on a terminal, a line per change otherwise (neither
    without `progress`)."""
    last = None
    status_line = None
    if progress and sys.stderr.isatty():
        from rich.console import Console

        status_line = Console(stderr=True).status(f"{job_id} queued")
        status_line.start()
    started = time.monotonic()
    try:
        while True:
            job: dict[str, Any] = await client.job(job_id)
            if job["status"] != last:
                last = job["status"]
                if progress and status_line is None:
                    print(f"{job_id} {last}", file=sys.stderr, flush=True)
            if status_line is not None:
                status_line.update(f"{job_id} {last} ({time.monotonic() - started:.0f} s)")
            if job["status"] in TERMINAL:
                return job
            await asyncio.sleep(0.25)
    finally:
        if status_line is not None:
            status_line.stop()


@app.command()
def submit(
    repo: str,
    ref: Annotated[str | None, typer.Option(help="Branch, tag or commit.")] = None,
    command: Annotated[str | None, typer.Option(help="Shell command to run.")] = None,
    timeout: Annotated[int | None, typer.Option(min=1, help="Seconds.")] = None,
    env: Annotated[list[str] | None, typer.Option(help="NAME=VALUE, repeatable.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the end; exit 1 unless it succeeded.")
    ] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Stream the log until the end.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
) -> None:
    """Submit a repository (URL, or a local directory to `reporun serve`)."""
    if wait and follow:
        fail("--wait and --follow do not go together")
    from reporun.cli.local import absolute, is_local, uncommitted

    local = absolute(repo) if is_local(repo) else None
    body: dict[str, Any] = {"repo": str(local) if local is not None else repo}
    for key, value in (("ref", ref), ("command", command), ("timeout", timeout)):
        if value is not None:
            body[key] = value
    if env:
        body["env"] = _env_pairs(env)

    async def submit_job() -> int:
        edits = await uncommitted(repo, local, ref) if local is not None else None
        async with _client() as client:
            job = await client.submit(body)
            job_id = job["id"]
            if follow:
                print(f"reporun: job {job_id} submitted; following its log", file=sys.stderr)
            if edits is not None:
                print(f"reporun: {edits}", file=sys.stderr)
            if not (wait or follow):
                print(json.dumps(job, indent=2) if as_json else job_id)
                return 0
            try:
                if follow:
                    # With --json, stdout carries the job alone: the log goes to stderr.
                    out = sys.stderr if as_json else sys.stdout
                    async for chunk in client.logs(job_id, follow=True):
                        out.buffer.write(chunk)
                        out.flush()
                job = await _wait(client, job_id, progress=not follow)  # the log was progress
            except asyncio.CancelledError:
                _stop_following(job_id, "following" if follow else "waiting for")
            if as_json:
                print(json.dumps(job, indent=2))
            else:
                print(_show(job), file=sys.stdout if wait else sys.stderr)
            return 0 if job["status"] == "succeeded" else 1

    raise SystemExit(run(submit_job()))


STATES = frozenset(status.value for status in JobStatus)


@app.command()
def jobs(
    every: Annotated[bool, typer.Option("--all", help="Every page, not only the newest.")] = False,
    status: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List jobs, newest first (admins see everyone's)."""
    if status is not None and status not in STATES:
        fail(f"--status must be one of {', '.join(sorted(STATES))}")

    async def list_jobs() -> None:
        async with _client() as client:
            items: list[dict[str, Any]] = []
            cursor = None
            while True:
                page = await client.jobs(status=status, limit=limit, cursor=cursor)
                items += page["items"]
                cursor = page["next_cursor"]
                if not every or not cursor:
                    break
        if as_json:
            print(json.dumps(items, indent=2))
            return
        for job in items:
            print(
                f"{job['id']}  {job['status']:<10} {job['owner']:<12} "
                f"{job['created_at'][:19]}  {job['repo']}"
            )

    run(list_jobs())


@app.command()
def status(job_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show one job."""

    async def show() -> None:
        async with _client() as client:
            job = await client.job(_job_id(job_id))
        print(json.dumps(job, indent=2) if as_json else _show(job))

    run(show())


@app.command()
def logs(job_id: str, follow: Annotated[bool, typer.Option("--follow", "-f")] = False) -> None:
    """Print a job's log; --follow streams it until the job ends."""

    async def stream() -> None:
        job = _job_id(job_id)
        async with _client() as client:
            try:
                async for chunk in client.logs(job, follow=follow):
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
            except asyncio.CancelledError:
                if not follow:
                    raise
                _stop_following(job)

    run(stream())


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a job: a queued one never starts, a running one is killed."""

    async def request() -> None:
        async with _client() as client:
            job = await client.cancel(_job_id(job_id))
        print(_show(job))

    run(request())


@app.command()
def workers(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The workers alive: state, current job, last heartbeat (admin)."""

    async def show() -> None:
        async with _client() as client:
            items = (await client.workers())["items"]
        if as_json:
            print(json.dumps(items, indent=2))
            return
        for worker in items:
            print(
                f"{worker['id']:<40} {worker['state']:<9} {worker['current_job'] or '-':<36} "
                f"{worker['last_heartbeat'][:19]}"
            )

    run(show())


@app.command()
def scaling(
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The observer's recent scaling decisions, newest first (admin)."""

    async def show() -> None:
        async with _client() as client:
            report = await client.scaling(limit=limit)
        if as_json:
            print(json.dumps(report, indent=2))
            return
        desired = report["desired"] if report["desired"] is not None else "-"
        print(f"workers: {report['actual']} alive, {desired} desired")
        for decision in report["decisions"]:
            print(
                f"{decision['at'][:19]}  {decision['direction']:<3} "
                f"{decision['actual']} -> {decision['desired']}  {decision['reason']}"
            )

    run(show())
