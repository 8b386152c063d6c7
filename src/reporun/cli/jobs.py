"""Commands that talk to a server: submit, jobs, status, logs, cancel, workers, scaling."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TextIO

import typer

from reporun.cli import show
from reporun.cli.base import _job_id, app, fail, run
from reporun.cli.show import STATES, TERMINAL

if TYPE_CHECKING:
    from reporun.cli.client import ApiClient


# The client ------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def _client() -> AsyncIterator[Any]:
    from reporun.cli.client import ApiClient, find_token
    from reporun.cli.settings import ClientSettings

    settings = ClientSettings.from_env()
    token = await find_token(settings)
    if token is None:
        fail(
            "no token: set REPORUN_TOKEN, run `reporun login` (OIDC), or start `reporun serve` "
            f"on {settings.url}, whose admin token the CLI finds by itself"
        )
    async with ApiClient(settings.url, token) as client:
        yield client


async def _print_followed(client: ApiClient, job_id: str, out: TextIO = sys.stdout) -> None:
    """A job's log on `out` as it comes, until the job ends; a new attempt said on stderr."""
    async for piece in client.follow(job_id):
        if isinstance(piece, int):
            print(f"reporun: attempt {piece} starts the log over", file=sys.stderr)
            continue
        out.buffer.write(piece)
        out.flush()


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
    """`ID failed (exit code 3)`: the id and the state with its exit code and reason."""
    shown = f"{job['id']} {show.status_text(job)}"
    if job.get("cancel_requested") and job["status"] not in TERMINAL:
        shown += " (cancel requested)"
    return shown


async def _wait(client: Any, job_id: str, *, progress: bool = True) -> dict[str, Any]:
    """Poll until the job ends; a spinner on a terminal, a line per change otherwise (neither
    without `progress`)."""
    import asyncio  # not at the top: `reporun --help` needs no event loop

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


JobId = Annotated[
    str, typer.Argument(metavar="ID", help="The job's id (a UUID).", show_default=False)
]


@app.command()
def submit(
    repo: Annotated[
        str,
        typer.Argument(
            metavar="REPO",
            help="A repository URL, or a local directory (`reporun serve` only).",
            show_default=False,
        ),
    ],
    ref: Annotated[
        str | None,
        typer.Option(
            metavar="REF", help="Branch, tag or commit.", show_default="the default branch"
        ),
    ] = None,
    command: Annotated[
        str | None,
        typer.Option(
            metavar="COMMAND",
            help="Shell command to run.",
            show_default="the repository's entry point",
        ),
    ] = None,
    timeout: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="SECONDS",
            help="Wall-clock limit.",
            show_default="reporun.toml's, else the server's",
        ),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=VALUE", help="A variable for the job (repeatable).", show_default=False
        ),
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="The runtime to run in (GET /v1/runtimes lists them).",
            show_default="reporun.toml's, else the server's",
        ),
    ] = None,
    setup: Annotated[
        str | None,
        typer.Option(
            metavar="COMMAND",
            help="A command to run first, with network registries (its result is kept).",
            show_default="reporun.toml's, else none",
        ),
    ] = None,
    network: Annotated[
        str | None,
        typer.Option(
            metavar="MODE",
            help=(
                "none; registries: only a proxy to the server's package registries; open: a "
                "network of its own (where the server allows it to you)."
            ),
            show_default="reporun.toml's, else none",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the end; exit 1 unless it succeeded.")
    ] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Stream the log until the end.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
) -> None:
    """Submit a repository to run as a job.

    Prints the job's id; --wait waits for its end, --follow streams its log meanwhile.
    """
    if wait and follow:
        fail("--wait and --follow do not go together")
    from reporun.cli.local import absolute, is_local, uncommitted

    local = absolute(repo) if is_local(repo) else None
    body: dict[str, Any] = {"repo": str(local) if local is not None else repo}
    for key, value in (
        ("ref", ref),
        ("command", command),
        ("timeout", timeout),
        ("runtime", runtime),
        ("network", network),
        ("setup", setup),
    ):
        if value is not None:
            body[key] = value
    if env:
        body["env"] = _env_pairs(env)

    async def submit_job() -> int:
        import asyncio

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
                    await _print_followed(client, job_id, sys.stderr if as_json else sys.stdout)
                job = await _wait(client, job_id, progress=not follow)  # the log was progress
            except asyncio.CancelledError:
                _stop_following(job_id, "following" if follow else "waiting for")
            if as_json:
                print(json.dumps(job, indent=2))
            else:
                print(_show(job), file=sys.stdout if wait else sys.stderr)
            return 0 if job["status"] == "succeeded" else 1

    raise SystemExit(run(submit_job()))


@app.command()
def jobs(
    every: Annotated[bool, typer.Option("--all", help="Every page, not only the newest.")] = False,
    status: Annotated[
        str | None,
        typer.Option(
            metavar="STATE",
            help=f"Only jobs in this state: {', '.join(STATES)}.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=500, metavar="N", help="Jobs to show (a page, with --all).")
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print them as a JSON array.")] = False,
) -> None:
    """List jobs, newest first.

    Users see their own jobs, admins everyone's.
    """
    if status is not None and status not in STATES:
        fail(f"--status must be one of {', '.join(STATES)}")

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
        elif items:
            width = show.REPO_WIDTH if sys.stdout.isatty() else None
            print(show.jobs_table(items, _now(), show.use_colour(sys.stdout), width))
        else:
            print(f"no {status} jobs" if status else "no jobs", file=sys.stderr)
        if cursor and not every:
            print(
                f"showing the newest {len(items)} job{'' if len(items) == 1 else 's'}: "
                "more with --limit N, all with --all",
                file=sys.stderr,
            )

    run(list_jobs())


def _now() -> datetime:
    return datetime.now(UTC)


@app.command()
def status(
    job_id: JobId,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
) -> None:
    """Show one job: state, repository, timings."""
    checked = _job_id(job_id)  # before the token is looked up: a typo is the first thing to say

    async def show_job() -> None:
        async with _client() as client:
            job = await client.job(checked)
        if as_json:
            print(json.dumps(job, indent=2))
        else:
            print(show.status_block(job, _now(), show.use_colour(sys.stdout)))

    run(show_job())


@app.command()
def logs(
    job_id: JobId,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream the log until the job ends.")
    ] = False,
) -> None:
    """Print a job's log."""
    job = _job_id(job_id)

    async def stream() -> None:
        import asyncio

        async with _client() as client:
            try:
                if follow:
                    await _print_followed(client, job)
                else:
                    async for chunk in client.logs(job):
                        sys.stdout.buffer.write(chunk)
                        sys.stdout.flush()
            except asyncio.CancelledError:
                if not follow:
                    raise
                _stop_following(job)

    run(stream())


@app.command()
def cancel(job_id: JobId) -> None:
    """Cancel a job.

    A queued job never starts; a running one is killed.
    """
    checked = _job_id(job_id)

    async def request() -> None:
        async with _client() as client:
            job = await client.cancel(checked)
        print(_show(job))

    run(request())


@app.command()
def workers(
    as_json: Annotated[bool, typer.Option("--json", help="Print them as a JSON array.")] = False,
) -> None:
    """List the workers alive (admin).

    Each with its state, the job it runs and its last heartbeat.
    """

    async def show_workers() -> None:
        async with _client() as client:
            items = (await client.workers())["items"]
        if as_json:
            print(json.dumps(items, indent=2))
        elif items:
            print(show.workers_table(items, _now(), show.use_colour(sys.stdout)))
        else:
            print("no workers", file=sys.stderr)

    run(show_workers())


@app.command()
def scaling(
    limit: Annotated[
        int, typer.Option(min=1, max=500, metavar="N", help="Decisions to show.")
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Show recent scaling decisions (admin).

    The workers alive and desired, then the observer's decisions, newest first.
    """

    async def show_scaling() -> None:
        async with _client() as client:
            report = await client.scaling(limit=limit)
        if as_json:
            print(json.dumps(report, indent=2))
            return
        print(show.scaling_report(report, _now(), show.use_colour(sys.stdout)))
        if not report["decisions"]:
            print("no scaling decisions yet", file=sys.stderr)

    run(show_scaling())
