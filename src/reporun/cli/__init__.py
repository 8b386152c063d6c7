"""The `reporun` command: run the parts (serve, api, worker, observer) and talk to a server."""

from __future__ import annotations

import os
import sys

import typer

from reporun.cli.base import _first_line, app, fail
from reporun.errors import ConfigError

# Importing a module registers its commands; `reporun --help` lists them in this order.
# isort: off
from reporun.cli import parts, jobs, tokens, login  # noqa: F401
# isort: on


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
