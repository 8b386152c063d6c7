"""The `reporun` command: run the parts (serve, api, worker) and talk to a server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from reporun.config import Settings
from reporun.errors import ClientError, ConfigError, InvalidInput, ReporunError

app = typer.Typer(
    name="reporun",
    help="Run git repositories as sandboxed jobs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
token_app = typer.Typer(help="Mint access tokens (local auth).", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(db_app, name="db")

TERMINAL = {"succeeded", "failed", "timed_out", "cancelled", "error"}


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"reporun: {message}", file=sys.stderr)
    raise SystemExit(code)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        fail(f"invalid configuration {where}: {error['msg']}")


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a command's coroutine; every failure becomes one line on stderr."""
    from sqlalchemy.exc import DBAPIError

    try:
        return asyncio.run(coro)
    except ClientError as exc:
        fail(exc.message, 2 if getattr(exc, "status", 500) < 500 else 1)
    except ReporunError as exc:
        fail(exc.message, 2 if isinstance(exc, ConfigError | InvalidInput) else 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except DBAPIError as exc:
        fail(f"the database is not answering: {_first_line(exc.orig or exc)}", 1)
    except OSError as exc:
        fail(f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}", 1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _job_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        fail(f"{value!r} is not a job id (a UUID)")


def _setup_logs(settings: Settings) -> None:
    from reporun.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)


# The parts --------------------------------------------------------------------------------------
Host = Annotated[str | None, typer.Option(help="Address to listen on.")]
Port = Annotated[int | None, typer.Option(help="Port to listen on.")]


@app.command()
def serve(
    host: Host = None,
    port: Port = None,
    data_dir: Annotated[Path | None, typer.Option(help="Database, tokens and mirrors.")] = None,
    workers: Annotated[int | None, typer.Option(min=0, max=64, help="Worker processes.")] = None,
) -> None:
    """The embedded service: API, workers and local tokens in one process tree (SQLite)."""
    from reporun.embedded import serve as serve_embedded

    settings = load_settings(host=host, port=port, data_dir=data_dir, workers=workers)
    _setup_logs(settings)
    run(serve_embedded(settings))


@app.command()
def api(host: Host = None, port: Port = None) -> None:
    """The API alone (cluster mode)."""
    from reporun.runtime import build_auth, check_schema, run_api
    from reporun.store import Store

    settings = load_settings(host=host, port=port)
    _setup_logs(settings)

    async def main() -> None:
        settings.check_secure(embedded=False)
        store = Store.open(settings.db_url)
        try:
            await check_schema(store)
            await run_api(settings, store, build_auth(settings))
        finally:
            await store.close()

    run(main())


@app.command()
def worker() -> None:
    """One worker: claims and runs jobs until SIGTERM, then drains."""
    from reporun.runtime import run_worker

    settings = load_settings()
    _setup_logs(settings)
    run(run_worker(settings))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to the newest schema."""
    from reporun.store import Store
    from reporun.store.migrate import upgrade

    settings = load_settings()

    async def migrate() -> None:
        store = Store.open(settings.db_url)
        try:
            await upgrade(store.engine)
        finally:
            await store.close()

    run(migrate())
    print("database is at the newest schema")


@token_app.command("create")
def token_create(
    name: str,
    role: Annotated[str, typer.Option(help="user or admin")] = "user",
    ttl: Annotated[int | None, typer.Option(min=60, help="Seconds until it expires.")] = None,
) -> None:
    """Mint a token signed with REPORUN_SECRET_KEY (or the key `reporun serve` keeps)."""
    from reporun.api.auth import LocalAuth

    settings = load_settings()
    if settings.secret_key is not None:
        key = settings.secret_key.get_secret_value()
    elif settings.secret_key_path.is_file():
        key = settings.secret_key_path.read_text().strip()
    else:
        fail("no signing key: set REPORUN_SECRET_KEY, or run `reporun serve` once")
    try:
        print(LocalAuth(key).mint(name, role, ttl=ttl))
    except ReporunError as exc:
        fail(exc.message)


@app.command()
def doctor() -> None:
    """Tell whether this host can run jobs safely, and why not."""
    from reporun.doctor import diagnose

    settings = load_settings()
    ok = run(diagnose(settings))
    raise SystemExit(0 if ok else 1)


# The client ------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def _client() -> AsyncIterator[Any]:
    from reporun.client import ApiClient, find_token

    settings = load_settings()
    token = await find_token(settings)
    if token is None:
        fail(
            "no token: set REPORUN_TOKEN, run `reporun login` (OIDC), or run `reporun serve` "
            "here, which stores one"
        )
    async with ApiClient(settings.url, token) as client:
        yield client


@app.command()
def login(
    issuer: Annotated[
        str | None, typer.Option(help="The OIDC issuer (default REPORUN_OIDC_ISSUER).")
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(help="The issuer's client for the CLI (default reporun-cli).")
    ] = None,
    username: Annotated[
        str | None, typer.Option(help="Sign in with a password instead of a browser.")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    device: Annotated[
        bool | None,
        typer.Option("--device/--password", help="Insist on the browser or the password flow."),
    ] = None,
) -> None:
    """Sign in to the OIDC issuer; the CLI then uses that token (REPORUN_TOKEN still wins)."""
    import getpass

    import httpx

    from reporun.login import HTTP_TIMEOUT, CredentialCache, DeviceCode, Issuer
    from reporun.login import login as sign_in

    settings = load_settings()
    issuer = issuer or settings.oidc_issuer
    if not issuer:
        fail("no issuer: pass --issuer or set REPORUN_OIDC_ISSUER")
    if not issuer.startswith(("https://", "http://")):
        fail(f"--issuer must be an http(s) URL, not {issuer!r}")
    if password_stdin and username is None:
        fail("--password-stdin needs --username")
    secret = settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else None

    if username is not None and not password_stdin and not sys.stdin.isatty():
        fail("no terminal to ask the password on: use --password-stdin")

    def ask_password() -> str:
        if password_stdin:
            return sys.stdin.readline().rstrip("\r\n")
        return getpass.getpass(f"password for {username}: ")

    def show_code(code: DeviceCode) -> None:
        where = code.verification_uri_complete or code.verification_uri
        print(
            f"To sign in, open {where}\n"
            f"(or open {code.verification_uri} and enter the code {code.user_code})\n"
            "waiting for the browser...",
            file=sys.stderr,
            flush=True,
        )

    async def main() -> None:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            credentials = await sign_in(
                Issuer(http, issuer, client_id or settings.oidc_client_id, secret),
                username=username,
                ask_password=ask_password,
                show_code=show_code,
                device=device,
            )
        cache = CredentialCache(settings.credentials_path)
        cache.save(credentials)
        name, roles = credentials.who()
        print(
            f"signed in as {name} (roles: {', '.join(roles) or 'none'}); "
            f"token cached in {cache.path}"
        )

    run(main())


@app.command()
def logout() -> None:
    """Forget the token `reporun login` cached (and revoke it at the issuer when it can)."""
    import httpx

    from reporun.login import HTTP_TIMEOUT, CredentialCache, Issuer, LoginError

    settings = load_settings()
    cache = CredentialCache(settings.credentials_path)

    async def main() -> None:
        credentials = cache.load()
        if credentials is None:
            print("not signed in")
            return
        if credentials.refresh_token:
            secret = settings.oidc_client_secret
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
                issuer = Issuer(
                    http,
                    credentials.issuer,
                    credentials.client_id,
                    secret.get_secret_value() if secret else None,
                )
                with contextlib.suppress(LoginError):
                    await issuer.discover()
                    await issuer.revoke(credentials.refresh_token)
        cache.delete()
        print(f"signed out; removed {cache.path}")

    run(main())


def _repo_argument(repo: str) -> str:
    """A local directory becomes its absolute path (only `reporun serve` accepts those)."""
    if "://" not in repo and not repo.startswith("-") and Path(repo).is_dir():
        return str(Path(repo).resolve())
    return repo


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail(f"--env takes NAME=VALUE, not {pair!r}")
        env[name] = value
    return env


def _show(job: dict[str, Any]) -> str:
    parts = [job["id"], job["status"]]
    if job.get("exit_code") is not None:
        parts.append(f"exit={job['exit_code']}")
    if job.get("reason"):
        parts.append(f"({job['reason']})")
    if job.get("cancel_requested") and job["status"] not in TERMINAL:
        parts.append("(cancel requested)")
    return " ".join(parts)


async def _wait(client: Any, job_id: str) -> dict[str, Any]:
    """Poll until the job ends; a spinner on a terminal, a line per change otherwise."""
    last = None
    status_line = None
    if sys.stderr.isatty():
        from rich.console import Console

        status_line = Console(stderr=True).status(f"{job_id} queued")
        status_line.start()
    started = time.monotonic()
    try:
        while True:
            job: dict[str, Any] = await client.job(job_id)
            if job["status"] != last:
                last = job["status"]
                if status_line is None:
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
    body: dict[str, Any] = {"repo": _repo_argument(repo)}
    for key, value in (("ref", ref), ("command", command), ("timeout", timeout)):
        if value is not None:
            body[key] = value
    if env:
        body["env"] = _env_pairs(env)

    async def submit_job() -> int:
        async with _client() as client:
            job = await client.submit(body)
            if not (wait or follow):
                print(json.dumps(job, indent=2) if as_json else job["id"])
                return 0
            if follow:
                async for chunk in client.logs(job["id"], follow=True):
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
            job = await _wait(client, job["id"])
            if as_json:
                print(json.dumps(job, indent=2))
            else:
                print(_show(job), file=sys.stdout if wait else sys.stderr)
            return 0 if job["status"] == "succeeded" else 1

    raise SystemExit(run(submit_job()))


STATES = TERMINAL | {"queued", "running"}


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
        async with _client() as client:
            async for chunk in client.logs(_job_id(job_id), follow=follow):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()

    run(stream())


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a job: a queued one never starts, a running one is killed."""

    async def request() -> None:
        async with _client() as client:
            job = await client.cancel(_job_id(job_id))
        print(_show(job))

    run(request())


def main() -> None:
    command = typer.main.get_command(app)
    try:
        command.main(args=sys.argv[1:], prog_name="reporun", standalone_mode=False)
    except ConfigError as exc:
        fail(exc.message)
    except BrokenPipeError:
        os._exit(0)
    except Exception as exc:
        # Typer's click exceptions, told apart by shape (Typer vendors click).
        code = getattr(exc, "exit_code", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and getattr(exc, "ctx", None) is not None:
            print(exc.ctx.get_help(), file=sys.stderr)  # type: ignore[attr-defined]
            raise SystemExit(2) from None
        if code == 2 and callable(getattr(exc, "format_message", None)):
            lines = exc.format_message().splitlines()  # type: ignore[attr-defined]
            fail(lines[0] if lines else "usage error")
        if type(exc).__name__ == "Abort":
            fail("aborted", 130)
        if isinstance(code, int):
            raise SystemExit(code) from None
        fail(f"internal error: {type(exc).__name__}: {_first_line(exc)}", 1)
