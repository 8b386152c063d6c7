"""What every command shares: the Typer app, settings, one-line failures."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import BaseSettings

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
token_app = typer.Typer(
    help="Create, list and revoke access tokens (local auth).", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(db_app, name="db")


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"reporun: {message}", file=sys.stderr)
    raise SystemExit(code)


AnySettings = TypeVar("AnySettings", bound=BaseSettings)


def load_settings(**overrides: Any) -> Settings:
    """The server's settings, with the command line's options over the environment."""
    return read_settings(Settings, **overrides)


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


def read_settings(kind: type[AnySettings], **overrides: Any) -> AnySettings:
    try:
        return kind(**{k: v for k, v in overrides.items() if v is not None})
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
