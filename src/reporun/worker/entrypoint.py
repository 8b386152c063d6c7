"""What runs, first match wins (DESIGN.md): the request's command, `command` in reporun.toml,
an executable run.sh, a Makefile, main.py.

The workspace holds untrusted files: they are looked at without following links.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

from reporun.errors import NotOffered, ReporunError
from reporun.jobs import NETWORK_MODES, Limits, check_network
from reporun.runtimes import NAME_PATTERN

TOML_NAME = "reporun.toml"
MAX_TOML_BYTES = 64 * 1024


class NoEntryPoint(ReporunError):
    """no entry point"""


class BadRepoConfig(ReporunError):
    """reporun.toml is not valid."""


@dataclass(frozen=True, slots=True)
class Entry:
    command: str
    timeout: int | None = None  # from reporun.toml
    network: str | None = None  # from reporun.toml: none, registries or open
    runtime: str | None = None  # from reporun.toml
    setup: str | None = None  # from reporun.toml: run first, with network registries


def _regular(path: Path) -> os.stat_result | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def read_repo_config(workspace: Path) -> dict[str, object]:
    path = workspace / TOML_NAME
    if _regular(path) is None:
        return {}
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(MAX_TOML_BYTES + 1)
    except OSError as exc:
        raise BadRepoConfig(f"{TOML_NAME}: cannot read it ({exc.strerror})") from None
    if len(raw) > MAX_TOML_BYTES:
        raise BadRepoConfig(f"{TOML_NAME} is larger than {MAX_TOML_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BadRepoConfig(f"{TOML_NAME}: {exc}") from None
    except RecursionError:
        raise BadRepoConfig(f"{TOML_NAME} is nested too deeply") from None
    return data


def pick_entry(workspace: Path, requested: str | None) -> Entry:
    config = read_repo_config(workspace)
    command = config.get("command")
    timeout = config.get("timeout")
    network = config.get("network")
    runtime = config.get("runtime")
    setup = config.get("setup")
    if setup is not None and (
        not isinstance(setup, str) or not setup.strip() or "\x00" in setup or len(setup) > 8192
    ):
        raise BadRepoConfig(f"{TOML_NAME}: setup must be a non-empty command")
    if command is not None and (not isinstance(command, str) or not command.strip()):
        raise BadRepoConfig(f"{TOML_NAME}: command must be a non-empty string")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1
    ):
        raise BadRepoConfig(f"{TOML_NAME}: timeout must be a positive integer of seconds")
    if isinstance(network, bool):
        raise BadRepoConfig(f'{TOML_NAME}: network is a mode now: "none", "registries" or "open"')
    if network is not None and network not in NETWORK_MODES:
        raise BadRepoConfig(f"{TOML_NAME}: network must be one of {', '.join(NETWORK_MODES)}")
    if runtime is not None and (not isinstance(runtime, str) or not NAME_PATTERN.match(runtime)):
        raise BadRepoConfig(f"{TOML_NAME}: runtime must be the name of a runtime, e.g. host")

    run_sh = _regular(workspace / "run.sh")
    if requested:
        chosen = requested
    elif command:
        chosen = command
    elif run_sh is not None and run_sh.st_mode & 0o111:
        chosen = "./run.sh"
    elif _regular(workspace / "Makefile") is not None:
        chosen = "make"
    elif _regular(workspace / "main.py") is not None:
        chosen = "python3 main.py"
    elif run_sh is not None:
        raise NoEntryPoint(
            "no entry point: run.sh exists but is not executable (chmod +x run.sh, then commit it)"
        )
    else:
        raise NoEntryPoint()
    return Entry(chosen, timeout, network, runtime, setup)


def limits_with(limits: Limits, entry: Entry, *, timeout_max: int, may_open: bool) -> Limits:
    """A job's limits with what its reporun.toml asks for where the request did not say;
    NotOffered (saying reporun.toml) for network `open` when the job may not have it
    (`may_open`: the server allowed it to its owner at submission)."""
    changes: dict[str, object] = {}
    if entry.timeout is not None and not limits.timeout_set:
        changes["timeout"] = min(entry.timeout, timeout_max)
    if entry.network is not None and not limits.network_set:
        changes["network"] = check_network(entry.network, field="network")
    chosen = limits.model_copy(update=changes) if changes else limits
    if chosen.network == "open" and not may_open:
        where = f"{TOML_NAME}: " if "network" in changes else ""
        raise NotOffered(
            f"{where}network 'open' is not allowed to this job's owner on this server "
            "(use registries)",
            field="network",
        )
    return chosen
