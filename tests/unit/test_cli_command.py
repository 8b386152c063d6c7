"""reporun.cli.command and reporun.cli.main lean on Typer 0.29's internals (its parameters'
`type_descriptor` and `_runtime_param`, typer._coercion, the class names of the errors it
raises): an upgrade that changes them must fail here, not quietly bring pydantic back into
every client command's start or turn a usage error into a traceback."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main

from reporun.cli import app
from reporun.cli.command import _Plain

# The commands that talk to a server: each starts without pydantic (tests/integration/
# test_cli_imports.py times none of this, it reads the modules a process loaded).
CLIENT = ("submit", "jobs", "status", "logs", "cancel", "workers", "scaling")


def params_of(command: Any, name: str, parent: Any = None) -> list[Any]:
    ctx = command.make_context(name, [], parent=parent, resilient_parsing=True)
    return list(command.get_params(ctx))  # with -h/--help


@pytest.mark.parametrize("name", CLIENT)
def test_client_commands_check_their_values_without_pydantic(name: str) -> None:
    root = typer.main.get_command(app)
    command = root.commands[name]  # type: ignore[attr-defined]
    params = params_of(command, name, root.make_context("reporun", [], resilient_parsing=True))
    assert {p.name for p in params} >= {"help"}
    for param in params:
        assert isinstance(param.get_runtime_param(), _Plain), (name, param.name)


def test_the_root_options_too() -> None:
    root = typer.main.get_command(app)
    params = params_of(root, "reporun")
    assert {p.name for p in params} == {"version", "help"}
    for param in params:
        assert isinstance(param.get_runtime_param(), _Plain), param.name


def test_the_plain_checks_are_the_ones_used() -> None:
    """A value given on the command line goes through _Plain (its own words)."""
    root = typer.main.get_command(app)
    with pytest.raises(Exception, match="must be at most 500, not 501") as raised:
        root.main(["jobs", "--limit", "501"], prog_name="reporun", standalone_mode=False)
    assert getattr(raised.value, "exit_code", None) == 2


def test_the_errors_main_tells_apart_by_name_are_still_raised() -> None:
    root = typer.main.get_command(app)
    with pytest.raises(Exception) as raised:
        root.main([], prog_name="reporun", standalone_mode=False)
    assert type(raised.value).__name__ == "NoArgsIsHelpError"
    assert getattr(raised.value, "ctx", None) is not None
    assert callable(getattr(raised.value, "format_message", None))
    from typer import exceptions

    assert exceptions.Abort.__name__ == "Abort"  # raised by Typer on Ctrl-C at a prompt
