"""Runtimes: the worlds a job may run in, by name. `host` is the worker host's own `/usr`; every
other one is an OCI image the operator names (`REPORUN_RUNTIMES`), whose root filesystem the
worker prepares once (worker/runtimes.py) and binds read-only as the job's `/`.

This module is the catalog every part shares (pure): which names exist, which image each is,
which one a job gets when it names none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from reporun.errors import ConfigError, NotOffered

HOST = "host"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# What skopeo takes: a registry (production), a local layout or archive (tests, air gaps).
TRANSPORTS = ("docker://", "oci:", "oci-archive:", "docker-archive:")


@dataclass(frozen=True, slots=True)
class Runtime:
    name: str
    image: str | None  # None: the host's own system

    @property
    def is_host(self) -> bool:
        return self.image is None


def parse_runtimes(value: object) -> dict[str, str]:
    """`name=image,name=image` (or a mapping) into a mapping; ConfigError, one line, when a
    name or an image reference is not one reporun can use."""
    if isinstance(value, Mapping):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    else:
        text = str(value or "").strip()
        pairs = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, image = item.partition("=")
            if not sep:
                raise ConfigError(f"REPORUN_RUNTIMES: {item!r} is not name=image")
            pairs.append((name.strip(), image.strip()))
    runtimes: dict[str, str] = {}
    for name, image in pairs:
        if not NAME_PATTERN.match(name):
            raise ConfigError(
                f"REPORUN_RUNTIMES: {name!r} is not a runtime name (a-z, 0-9, '.', '_', '-')"
            )
        if name == HOST:
            raise ConfigError("REPORUN_RUNTIMES: 'host' is the worker's own system already")
        if not image.startswith(TRANSPORTS) or any(c.isspace() for c in image):
            raise ConfigError(
                f"REPORUN_RUNTIMES: {name}={image!r} must be an image reference starting with "
                + " or ".join(TRANSPORTS)
            )
        if name in runtimes:
            raise ConfigError(f"REPORUN_RUNTIMES: {name!r} is named twice")
        runtimes[name] = image
    return runtimes


@dataclass(frozen=True, slots=True)
class Catalog:
    """The runtimes of this server and the default one."""

    images: Mapping[str, str]
    default: str = HOST

    def __post_init__(self) -> None:
        if self.default != HOST and self.default not in self.images:
            raise ConfigError(
                f"REPORUN_RUNTIME_DEFAULT={self.default!r} is not a runtime of REPORUN_RUNTIMES"
            )

    def names(self) -> list[str]:
        return [HOST, *sorted(self.images)]

    def check(self, name: str, *, field: str = "runtime") -> str:
        """A name a job asked for; InvalidInput naming the field when there is no such one."""
        if name != HOST and name not in self.images:
            raise NotOffered(
                f"runtime {name[:80]!r} is not one of this server's: {', '.join(self.names())}",
                field=field,
            )
        return name

    def choose(self, requested: str | None, configured: str | None) -> Runtime:
        """A job's runtime: the request's, else its reporun.toml's, else the default;
        NotOffered saying where an unknown name came from."""
        name = requested or configured or self.default
        try:
            return self.get(self.check(name))
        except NotOffered as exc:
            where = "the request: " if requested else "reporun.toml: " if configured else ""
            raise NotOffered(where + exc.message, field="runtime") from None

    def get(self, name: str | None) -> Runtime:
        """The runtime of that name (None: the default); KeyError when there is none."""
        chosen = name or self.default
        if chosen == HOST:
            return Runtime(HOST, None)
        return Runtime(chosen, self.images[chosen])
