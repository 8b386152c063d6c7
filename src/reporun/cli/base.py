"""What every command shares: the Typer app, settings, one-line failures.

Imported by every command, so it imports little: the server's settings (pydantic) and the
database's errors are loaded only by the commands that use them.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from reporun.cli.command import App
from reporun.errors import ClientError, ConfigError, InvalidInput, ReporunError

if TYPE_CHECKING:
    from reporun.config import Settings


app = App(
    name="reporun",
    help="Run git repositories as sandboxed jobs.",
    add_completion=False,
    pretty_exceptions_enable=False,
)
token_app = App(help="Create, list and revoke tokens (local auth).")
db_app = App(help="The database schema.")
app.add_typer(token_app, name="token")
app.add_typer(db_app, name="db")


def _show_version(value: bool) -> None:
    if value:
        from reporun import __version__

        print(f"reporun {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"reporun: {message}", file=sys.stderr)
    raise SystemExit(code)


def load_settings(**overrides: Any) -> Settings:
    """The server's settings, with the command line's options over the environment."""
    from pydantic import ValidationError

    from reporun.config import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        fail(f"invalid configuration {where}: {error['msg']}")


def local_settings() -> Settings:
    """The settings of a command run beside the server (token, doctor): with no data dir or
    database configured, the data dir of the `reporun serve` running on REPORUN_URL, else the
    default one (see reporun.paths)."""
    from reporun.paths import DEFAULT_URL, served_data_dir

    settings = load_settings()
    if "data_dir" in settings.model_fields_set or settings.database_url or settings.postgres_host:
        return settings
    served = served_data_dir(os.environ.get("REPORUN_URL") or DEFAULT_URL)
    return settings if served is None else settings.model_copy(update={"data_dir": served})


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a command's coroutine; every failure becomes one line on stderr."""
    import asyncio  # here, not at the top: `reporun --help` needs no event loop

    try:
        return asyncio.run(coro)
    except ClientError as exc:
        fail(exc.message, 2 if getattr(exc, "status", 500) < 500 else 1)
    except ReporunError as exc:
        fail(exc.message, 2 if isinstance(exc, ConfigError | InvalidInput) else 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except BrokenPipeError:
        raise  # stdout closed early (`reporun jobs | head`): main() ends quietly
    except OSError as exc:
        fail(f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}", 1)
    except Exception as exc:
        # Only a command that opened a database can meet its errors (and imported them).
        if "sqlalchemy" in sys.modules:
            from sqlalchemy.exc import DBAPIError

            if isinstance(exc, DBAPIError):
                fail(f"the database is not answering: {_first_line(exc.orig or exc)}", 1)
        raise


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
