"""The dashboard's forms: reading a urlencoded body, and the submit form as the API's request.

The submit form is checked by the same model and the same submission service as
`POST /v1/jobs`, so its messages are the API's; each is shown beside the field it names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from pydantic import ValidationError

from reporun.api.schemas import JobCreate
from reporun.errors import InvalidInput

FORM_TYPE = "application/x-www-form-urlencoded"
# The submit form's fields, in its order; `limits.*` are the API's limits, in bytes.
TEXT_FIELDS = ("repo", "ref", "command", "setup", "runtime", "network")
NUMBER_FIELDS = ("timeout", "limits.memory", "limits.processes", "limits.log", "limits.disk")
FIELDS = (*TEXT_FIELDS, "env", *NUMBER_FIELDS)


class UnsupportedForm(InvalidInput):
    """The body is not a urlencoded form."""


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded body's fields (the last of a repeated name); InvalidInput for another
    content type or bytes that are not UTF-8."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != FORM_TYPE:
        raise UnsupportedForm(f"send the form as {FORM_TYPE}", field="body")
    body = await request.body()
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise InvalidInput("the form is not UTF-8", field="body") from None
    try:
        return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=64))
    except ValueError:
        raise InvalidInput("the form has more than 64 fields", field="body") from None


@dataclass
class JobForm:
    """What the submit form holds: the values as typed (shown again after an error), and the
    message of each field at fault."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, fields: dict[str, str]) -> JobForm:
        return cls({name: fields.get(name, "") for name in FIELDS})

    def request(self) -> JobCreate | None:
        """The API's request, or None with `errors` filled."""
        body: dict[str, Any] = {}
        for name in TEXT_FIELDS:
            value = self.values.get(name, "")
            if name == "repo" or value.strip():
                body[name] = value.strip() if name in ("repo", "ref", "runtime") else value
        limits: dict[str, str] = {}
        for name in NUMBER_FIELDS:
            value = self.values.get(name, "").strip().replace("_", "")
            if not value:
                continue
            if name.startswith("limits."):
                limits[name.removeprefix("limits.")] = value
            else:
                body[name] = value
        if limits:
            body["limits"] = limits
        env = self._env()
        if env:
            body["env"] = env
        if self.errors:
            return None
        try:
            return JobCreate.model_validate(body)
        except ValidationError as exc:
            for error in exc.errors():
                self.refuse(_field(error.get("loc", ())), str(error.get("msg", "invalid value")))
            return None

    def refuse(self, name: str | None, message: str) -> None:
        """Put an error beside its field: `limits.memory` is its own, `env.A` is `env`'s; one
        of no field (a quota) is the form's."""
        where = name or "form"
        if not where.startswith("limits."):
            where = where.split(".")[0]
        if where not in FIELDS:
            where = "form"
        self.errors.setdefault(where, message)

    def _env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for number, line in enumerate(self.values.get("env", "").splitlines(), 1):
            if not line.strip():
                continue
            name, sep, value = line.partition("=")
            if not sep or not name.strip():
                self.refuse("env", f"line {number}: write NAME=value")
                continue
            env[name.strip()] = value
        return env


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)
