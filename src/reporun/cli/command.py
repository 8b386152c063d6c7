"""The classes the commands are made of: Typer's, with help that names arguments as the
usage line does and shows no type placeholders, -h beside --help, and plain values checked
without pydantic (Typer 0.29 builds a pydantic TypeAdapter per parameter otherwise: a third of
a second at the start of every client command)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, get_args, get_origin

import typer
from typer._coercion import RuntimeParam
from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:
    from typer._click import Context, HelpFormatter

Function = TypeVar("Function", bound=Callable[..., Any])

# -h as well as --help, on every command (click hands it down to the subcommands).
CONTEXT = {"help_option_names": ["-h", "--help"]}


@dataclass(frozen=True)
class _Plain(RuntimeParam):
    """Checks a str, int or list[str] value without pydantic. Typer 0.29 builds a pydantic
    TypeAdapter for every parameter, which cost a client command a third of a second."""

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        annotation: Any = self.annotation
        if get_origin(annotation) is list:
            return [self._one(item, str, param, ctx) for item in value]
        return self._one(value, annotation, param, ctx)

    def _one(self, value: Any, kind: Any, param: Any, ctx: Any) -> Any:
        if kind is bool:
            if not isinstance(value, bool):
                raise typer.BadParameter(f"{value!r} is not true or false", ctx=ctx, param=param)
            return value
        if kind is str:
            if not isinstance(value, str):
                raise typer.BadParameter(f"{value!r} is not text", ctx=ctx, param=param)
            return value
        if not isinstance(value, int):
            try:
                value = int(str(value).strip())
            except ValueError:
                raise typer.BadParameter(
                    f"{value!r} is not a whole number", ctx=ctx, param=param
                ) from None
        low, high = self.parameter_info.min, self.parameter_info.max
        if low is not None and value < low:
            raise typer.BadParameter(f"must be at least {low}, not {value}", ctx=ctx, param=param)
        if high is not None and value > high:
            raise typer.BadParameter(f"must be at most {high}, not {value}", ctx=ctx, param=param)
        return value


def _lighten(params: list[Any]) -> None:
    """Plain checks for the parameters that need nothing more (bool flags, --help among
    them, come to a check only as None, which needs none)."""
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or getattr(param, "_runtime_param", False) is not None:
            continue
        info, annotation = descriptor.parameter_info, descriptor.annotation
        if getattr(info, "parser", None) is not None or getattr(info, "clamp", False):
            continue
        if annotation in (str, int, bool) or (
            get_origin(annotation) is list and get_args(annotation) == (str,)
        ):
            param._runtime_param = _Plain(parameter_info=info, annotation=annotation)


class _Light:
    """Plain values checked without pydantic: the parameters, and the help option click adds."""

    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _lighten(self.params)

    def get_help_option(self, ctx: Context) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        _lighten([option])
        return option


class Command(_Light, TyperCommand):
    """A command whose help names its arguments as the usage line does (`REPO`), without
    Typer's type placeholders (`repo <str>`), and whose plain values need no pydantic."""

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = _argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Context, formatter: HelpFormatter) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((_argument_name(param), getattr(param, "help", None) or ""))
                continue
            shown = getattr(param, "show_default", None)
            if isinstance(shown, str):  # click puts a default given as text in parentheses
                record = (record[0], record[1].replace(f"({shown})", shown, 1))
            options.append((record[0], _range_in_words(param, record[1])))
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _range_in_words(param: Any, text: str) -> str:
    """`[default: 20; 1 to 500]` for Typer's `[default: 20; 1<=x<=500]`."""
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    hint = getattr(param, "_get_number_range_help_str", lambda: None)()
    if not hint or "[" not in text:
        return text
    if low is not None and high is not None:
        words = f"{low} to {high}"
    else:
        words = f"at least {low}" if high is None else f"at most {high}"
    head, bracket, extra = text.rpartition("[")  # the range is in the last bracket
    return head + bracket + extra.replace(hint, words, 1)


def _argument_name(param: Any) -> str:
    name = str(param.metavar or (param.name or "").upper())
    return name + ("..." if param.nargs != 1 else "")


class Group(_Light, TyperGroup):
    """A group of commands, its own options checked without pydantic too."""


class App(typer.Typer):
    """Typer with reporun's command classes and -h on every command."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", Group)
        kwargs.setdefault("context_settings", CONTEXT)
        kwargs.setdefault("no_args_is_help", True)
        kwargs.setdefault("rich_markup_mode", None)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Function], Function]:
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)
