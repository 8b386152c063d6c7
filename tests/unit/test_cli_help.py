"""Every command's help, walked through the click tree: no `<str>`-style placeholders, a
summary that is one complete line, a description for each option, the default where there is
one; `-h` and `--version` work."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer import _click
from typer._click.utils import make_default_short_help
from typer.testing import CliRunner

import reporun
from reporun.cli import app
from reporun.config import Settings

PLACEHOLDER = re.compile(r"<[a-z][a-z_ \[\],|]*>")
# click's own limit for a summary (`make_default_short_help`): a terminal 60 columns wide
# gives about this much, so a summary this short is never cut.
SUMMARY_LIMIT = 45


def commands() -> Iterator[tuple[str, Any, Any]]:
    """(path, command, context) for the root and every command and group below it."""
    root = typer.main.get_command(app)

    def walk(path: str, command: Any, parent: Any) -> Iterator[tuple[str, Any, Any]]:
        name = path.rsplit(" ", 1)[-1]
        ctx = command.make_context(name, [], parent=parent, resilient_parsing=True)
        yield path, command, ctx
        for sub_name, sub in getattr(command, "commands", {}).items():
            yield from walk(f"{path} {sub_name}", sub, ctx)

    yield from walk("reporun", root, None)


ALL = list(commands())
IDS = [path for path, _, _ in ALL]


def test_every_command_is_walked() -> None:
    assert {"reporun submit", "reporun jobs", "reporun token create", "reporun db upgrade"} <= set(
        IDS
    )


@pytest.mark.parametrize(("path", "command", "ctx"), ALL, ids=IDS)
def test_help_has_no_type_placeholders(path: str, command: Any, ctx: Any) -> None:
    text = command.get_help(ctx)
    assert not PLACEHOLDER.search(text), f"{path}:\n{text}"
    assert "{" not in text.splitlines()[0], text  # the usage line names arguments plainly


@pytest.mark.parametrize(("path", "command", "ctx"), ALL, ids=IDS)
def test_the_summary_is_one_short_complete_line(path: str, command: Any, ctx: Any) -> None:
    help_text = command.help or ""
    first = help_text.split("\n\n", 1)[0]
    assert first and "\n" not in first.strip(), f"{path}: the summary is not one line: {first!r}"
    summary = make_default_short_help(help_text, SUMMARY_LIMIT)
    assert not summary.endswith("..."), f"{path}: {summary!r} is cut"
    assert summary == first.strip() and summary.endswith("."), f"{path}: {summary!r}"


@pytest.mark.parametrize(("path", "command", "ctx"), ALL, ids=IDS)
def test_the_group_listings_cut_no_summary(path: str, command: Any, ctx: Any) -> None:
    formatter = _click.HelpFormatter(width=60)
    command.format_help(ctx, formatter)
    assert "..." not in formatter.getvalue().replace("[ARGS]...", ""), formatter.getvalue()


def options(command: Any, ctx: Any) -> Iterator[Any]:
    for param in command.get_params(ctx):
        if param.param_type_name == "option" and param.name != "help":
            yield param


@pytest.mark.parametrize(("path", "command", "ctx"), ALL, ids=IDS)
def test_every_option_and_argument_is_described(path: str, command: Any, ctx: Any) -> None:
    for param in command.get_params(ctx):
        assert (param.help or "").strip(), f"{path} {param.name} has no description"


@pytest.mark.parametrize(("path", "command", "ctx"), ALL, ids=IDS)
def test_defaults_are_shown_where_there_is_one(path: str, command: Any, ctx: Any) -> None:
    for option in options(command, ctx):
        if option.is_flag and option.secondary_opts == [] and not option.default:
            continue  # a plain flag: off unless given
        record = option.get_help_record(ctx)
        assert record is not None
        wanted = option.default is not None or isinstance(option.show_default, str)
        if option.show_default is False:
            assert option.default is None, f"{path} {option.name}: its default is hidden"
            continue
        assert wanted, f"{path} {option.name}: say what happens without it (show_default)"
        assert "[default: " in record[1], f"{path} {option.name}: {record}"
    # A default given as text reads as a value, not in click's parentheses.
    assert "[default: (" not in command.get_help(ctx)


def help_of(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_server_defaults_shown_are_the_settings_own() -> None:
    defaults = Settings.model_fields
    serve = help_of("serve")
    assert f"[default: {defaults['host'].default}]" in serve
    assert f"[default: {defaults['port'].default}]" in serve
    assert f"[default: {defaults['workers'].default};" in serve
    assert "[default: ~/.local/share/reporun]" in serve  # reporun.paths.default_data_dir


def test_metavars_name_what_to_give() -> None:
    submit = help_of("submit")
    for shown in (
        "Usage: reporun submit [OPTIONS] REPO",
        "--env NAME=VALUE",
        "--timeout SECONDS",
        "--runtime NAME",
    ):
        assert shown in submit, submit
    assert "Usage: reporun status [OPTIONS] ID" in help_of("status")
    assert "--limit N" in help_of("jobs")
    assert "-f, --follow" in help_of("logs")


@pytest.mark.parametrize("args", [["-h"], ["submit", "-h"], ["token", "create", "-h"]])
def test_dash_h_is_help(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and result.output.startswith("Usage: reporun"), result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"reporun {reporun.__version__}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["jobs", "--limit", "0"], "Invalid value for '--limit': must be at least 1, not 0"),
        (["jobs", "--limit", "501"], "must be at most 500, not 501"),
        (["scaling", "--limit", "3x"], "'3x' is not a whole number"),
        (["submit", "x", "--timeout", "soon"], "Invalid value for '--timeout'"),
        (["token", "create"], "Missing argument 'NAME'"),
    ],
)
def test_values_are_checked_without_pydantic(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and message in result.output, result.output


RANGE_HINT = re.compile(r"\bx\s*[<>]=?|[<>]=?\s*x\b")  # click's `x>=1`, `1<=x<=500`


@pytest.mark.parametrize(("path", "command", "ctx"), ALL, ids=IDS)
def test_ranges_are_in_words(path: str, command: Any, ctx: Any) -> None:
    text = command.get_help(ctx)
    assert not RANGE_HINT.search(text), f"{path}:\n{text}"


def test_the_range_words() -> None:
    assert "[default: 20; 1 to 500]" in help_of("jobs")
    assert "[default: 20; 1 to 500]" in help_of("scaling")
    submit = " ".join(help_of("submit").split())  # the help's lines joined
    assert "[default: reporun.toml's, else the server's; at least 1]" in submit
