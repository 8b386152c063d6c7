"""The job: its states, the legal moves between them, and what a submission may ask for.

Pure code: no I/O. The store applies every state change through `check_transition`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from reporun.errors import IllegalTransition, InvalidInput
from reporun.runtimes import Catalog
from reporun.urlpolicy import RepoUrl, UrlPolicy, parse_repo_url

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    ERROR = "error"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.TIMED_OUT,
        JobStatus.CANCELLED,
        JobStatus.ERROR,
    }
)

TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    # running -> queued only when a worker is lost and attempts remain.
    JobStatus.RUNNING: TERMINAL | {JobStatus.QUEUED},
}


def check_transition(source: JobStatus, target: JobStatus) -> None:
    """Raise IllegalTransition unless `source -> target` is a legal move."""
    if target not in TRANSITIONS.get(source, frozenset()):
        raise IllegalTransition(f"a {source.value} job cannot become {target.value}")


def sources_of(target: JobStatus) -> frozenset[JobStatus]:
    """Every state a job may be in to move to `target`."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


# Where a job's time goes, in order (DESIGN.md's `phases`): the worker times the middle ones;
# `wait` is created -> started, `report` the rest of started -> finished (the worker's own
# steps around the phases: the claim's bookkeeping, the log's end and the end record).
WORKER_PHASES = ("fetch", "checkout", "setup", "sandbox_start", "run")
PHASES = ("wait", *WORKER_PHASES, "report")


@dataclass(frozen=True, slots=True)
class LogTail:
    """The end of a run's log that is not stored yet: the next chunk (`seq`), its bytes, and
    whether the log was cut at the limit."""

    seq: int
    data: bytes
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended, as the worker reports it, with the seconds of each phase it reached.

    What the run did not store yet goes in with the end record, in its transaction: the
    `start` (commit, command, runtime) of a job that ended before it was written, and the
    log's `tail`. A short job's end is then one write."""

    status: JobStatus
    exit_code: int | None = None
    reason: str | None = None
    phases: Mapping[str, float] = field(default_factory=dict)
    start: Start | None = None
    tail: LogTail | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """What a worker learns of a job it runs: whether it still holds it, and whether the job
    was asked to stop."""

    held: bool
    cancel_requested: bool = False


class Limits(BaseModel):
    """What one job may use. Bytes for sizes, seconds for time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout: int
    memory: int
    processes: int
    log: int
    disk: int
    # none | registries | open (NETWORK_MODES); a row from before the modes held a bool.
    network: str = "none"
    # Whether the submission set the timeout or the network (else reporun.toml's may).
    timeout_set: bool = False
    network_set: bool = False

    @field_validator("network", mode="before")
    @classmethod
    def _mode_of_old_rows(cls, value: object) -> object:
        # `true` shared the worker host's network: nothing that may run now comes closer
        # than `registries`.
        return ("registries" if value else "none") if isinstance(value, bool) else value


class JobSpec(BaseModel):
    """A checked submission: what the worker runs."""

    model_config = ConfigDict(frozen=True)

    repo: str
    ref: str | None = None
    command: str | None = None
    env: dict[str, str] = {}
    limits: Limits
    # Whether the worker may clone it from a local path, file:// or a loopback address: only
    # an admin's job on a server that allows local sources (`Submissions.submit` sets it).
    local_sources: bool = False
    # Whether it may have network mode `open` (asked for in the request or its reporun.toml):
    # only where the operator allows it, for its owner (`Submissions.submit` sets it).
    network_open: bool = False
    # The runtime the request named (checked against the server's); None: reporun.toml's, else
    # the server's default, chosen by the worker.
    runtime: str | None = None
    # A command to run first, with network `registries` (None: reporun.toml's, if any).
    setup: str | None = None
    # The job this one re-runs (the dashboard's re-run), if any.
    rerun_of: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Start:
    """What a running job resolved to: the commit, the command that runs, and the runtime it
    runs in with its image's digest (None: leave the runtime as it is)."""

    commit: str
    command: str
    runtime: str | None = None
    runtime_digest: str | None = None
    setup: str | None = None

    def values(self) -> dict[str, object]:
        """The job's fields this start sets."""
        values: dict[str, object] = {
            "commit": self.commit,
            "command": self.command,
            "setup": self.setup,
        }
        if self.runtime is not None:
            values |= {"runtime": self.runtime, "runtime_digest": self.runtime_digest}
        return values


class Job(BaseModel):
    """A job as stored and shown (`GET /v1/jobs/{id}`)."""

    id: uuid.UUID
    owner: str
    repo: str
    ref: str | None
    commit: str | None
    command: str | None
    status: JobStatus
    exit_code: int | None
    reason: str | None
    attempts: int
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    log_bytes: int
    log_truncated: bool
    log_epoch: int = 0  # how many times its log was started over (the events' resumption)
    limits: Limits
    env: dict[str, str] = {}
    cancel_requested: bool = False
    local_sources: bool = False  # see JobSpec; a row from before the field: not allowed
    network_open: bool = False  # see JobSpec
    # The runtime the request named (None: reporun.toml's or the default); from its start, the
    # one it runs in, with its image's digest.
    runtime_requested: str | None = None
    runtime: str | None = None
    runtime_digest: str | None = None
    # The setup command asked for; from the start, the one that runs (the request's, else
    # reporun.toml's).
    setup: str | None = None
    rerun_of: uuid.UUID | None = None  # see JobSpec
    # The worker's timings of the phases it reached (WORKER_PHASES), written with the end.
    phase_seconds: dict[str, float] = {}

    @property
    def phases(self) -> dict[str, float | None]:
        """Seconds per phase (PHASES), None where the job never reached it; once it ended,
        they add up to its time from creation to end."""
        shown: dict[str, float | None] = dict.fromkeys(PHASES)
        shown["wait"] = self.wait_seconds
        for name in WORKER_PHASES:
            shown[name] = self.phase_seconds.get(name)
        run = self.run_seconds
        if run is not None:
            timed = sum(v for k, v in self.phase_seconds.items() if k in WORKER_PHASES)
            shown["report"] = max(0.0, run - timed)
        return shown

    @property
    def wait_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        return max(0.0, (self.started_at - self.created_at).total_seconds())

    @property
    def run_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - self.started_at).total_seconds())


# Submission checks ---------------------------------------------------------------------------

REF_PATTERN = re.compile(r"^[A-Za-z0-9._/+-]{1,255}$")
# A job's network: nothing at all; only the egress proxy to named registries; an isolated
# network of its own (operator-allowed).
NETWORK_MODES = ("none", "registries", "open")
# What `registries` reaches unless the operator names others (REPORUN_EGRESS_HOSTS): the
# Python, npm, Debian, crates and Go module registries.
DEFAULT_EGRESS_HOSTS = (
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "deb.debian.org",
    "security.debian.org",
    "index.crates.io",
    "static.crates.io",
    "crates.io",
    "proxy.golang.org",
    "sum.golang.org",
)
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Names a job may not set: they steer the loader, the shell or reporun itself.
RESERVED_ENV = re.compile(r"^(LD_.*|REPORUN_.*|PATH|HOME|TMPDIR|BASH_ENV|ENV|SHELLOPTS|IFS)$")


@dataclass(frozen=True, slots=True)
class LimitRange:
    """What a job gets unless it asks, and the most it may ask for."""

    default: int
    maximum: int


@dataclass(frozen=True, slots=True)
class OpenNetwork:
    """Who may have network mode `open` (REPORUN_NETWORK_OPEN): every admin, the users it
    names, or nobody (the default)."""

    admins: bool = False
    users: frozenset[str] = frozenset()

    @classmethod
    def of(cls, entries: Iterable[str]) -> OpenNetwork:
        names = {entry.strip() for entry in entries if entry.strip()}
        return cls(admins="admins" in names, users=frozenset(names - {"admins"}))

    @property
    def offered(self) -> bool:
        return self.admins or bool(self.users)

    def allows(self, owner: str, *, admin: bool) -> bool:
        return (admin and self.admins) or owner in self.users

    def modes(self) -> list[str]:
        """The network modes a request may name on this server."""
        return list(NETWORK_MODES) if self.offered else ["none", "registries"]

    def refusal(self) -> str:
        if not self.offered:
            return "network 'open' is not offered by this server (use registries)"
        who = " and ".join(
            (["admins"] if self.admins else []) + (["the users it names"] if self.users else [])
        )
        return f"network 'open' is only for {who} on this server (use registries)"


@dataclass(frozen=True, slots=True)
class JobRules:
    """What a submission may ask for on this server (`wiring.job_rules`, from the settings)."""

    url_policy: UrlPolicy
    timeout: LimitRange
    memory: LimitRange
    processes: LimitRange
    log: LimitRange
    disk: LimitRange
    env_max_vars: int
    env_max_bytes: int
    command_max_bytes: int
    runtimes: Catalog = field(default_factory=lambda: Catalog({}))
    open_network: OpenNetwork = field(default_factory=lambda: OpenNetwork())


def check_ref(ref: str) -> str:
    """A branch, tag or commit name, as git's check-ref-format would take it."""
    if (
        not REF_PATTERN.match(ref)
        or ref.startswith(("-", "/", "."))
        or ref.endswith(("/", ".", ".lock"))
        or ".." in ref
        or "//" in ref
        or "/." in ref
    ):
        raise InvalidInput(f"ref {ref[:80]!r} is not a valid branch, tag or commit", field="ref")
    return ref


def check_command(command: str, rules: JobRules, *, field: str = "command") -> str:
    if not command.strip():
        raise InvalidInput(f"{field} must not be empty", field=field)
    if "\x00" in command:
        raise InvalidInput(f"{field} must not contain NUL bytes", field=field)
    try:
        size = len(command.encode())
    except UnicodeEncodeError:
        raise InvalidInput(f"{field} is not valid Unicode text", field=field) from None
    if size > rules.command_max_bytes:
        raise InvalidInput(f"{field} is longer than {rules.command_max_bytes} bytes", field=field)
    return command


def check_env(env: Mapping[str, str], rules: JobRules) -> dict[str, str]:
    if len(env) > rules.env_max_vars:
        raise InvalidInput(f"env has more than {rules.env_max_vars} variables", field="env")
    total = 0
    for name, value in env.items():
        if not ENV_NAME_PATTERN.match(name):
            raise InvalidInput(f"env name {name[:80]!r} is not a valid name", field="env")
        if RESERVED_ENV.match(name):
            raise InvalidInput(f"env name {name!r} is reserved", field="env")
        if "\x00" in value:
            raise InvalidInput(f"env {name} must not contain NUL bytes", field="env")
        try:
            total += len(name) + len(value.encode())
        except UnicodeEncodeError:
            raise InvalidInput(f"env {name} is not valid Unicode text", field="env") from None
    if total > rules.env_max_bytes:
        raise InvalidInput(f"env is larger than {rules.env_max_bytes} bytes", field="env")
    return dict(env)


_LIMITS = ("timeout", "memory", "processes", "log", "disk")
# Below these a job cannot even start its shell.
LIMIT_MINIMUMS = {"timeout": 1, "memory": 16 * MiB, "processes": 8, "log": 0, "disk": 1 * MiB}


def _limit(name: str, value: object, rules: JobRules, field: str) -> int:
    allowed: LimitRange = getattr(rules, name)
    if value is None:
        return allowed.default
    maximum = allowed.maximum
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an integer", field=field)
    if value < LIMIT_MINIMUMS[name]:
        raise InvalidInput(f"{name} must be at least {LIMIT_MINIMUMS[name]}", field=field)
    if value > maximum:
        raise InvalidInput(f"{name} {value} is above this server's maximum {maximum}", field=field)
    return value


def resolve_limits(
    asked: Mapping[str, Any],
    rules: JobRules,
    *,
    timeout: int | None = None,
    network: str | None = None,
) -> Limits:
    """The server's defaults, lowered or raised (up to the maxima) by what the job asks."""
    values: dict[str, Any] = {
        name: _limit(name, asked.get(name), rules, f"limits.{name}") for name in _LIMITS
    }
    if timeout is not None:
        values["timeout"] = _limit("timeout", timeout, rules, "timeout")
    values["timeout_set"] = timeout is not None or asked.get("timeout") is not None
    if network is not None:
        values["network"] = check_network(network, field="network")
        values["network_set"] = True
    return Limits(**values)


def check_network(mode: str, *, field: str) -> str:
    """One of the network modes; InvalidInput naming `field` otherwise. Whether the job may
    have `open` is its owner's (`Submissions.submit`, `JobSpec.network_open`)."""
    if mode not in NETWORK_MODES:
        raise InvalidInput(
            f"network {mode[:40]!r} is not one of {', '.join(NETWORK_MODES)}", field=field
        )
    return mode


def build_spec(
    *,
    repo: str,
    ref: str | None,
    command: str | None,
    timeout: int | None,
    env: Mapping[str, str] | None,
    limits: Mapping[str, Any] | None,
    rules: JobRules,
    runtime: str | None = None,
    network: str | None = None,
    setup: str | None = None,
) -> tuple[JobSpec, RepoUrl]:
    """Check a submission against the server's rules; raise InvalidInput naming the field."""
    repo_url = parse_repo_url(repo, rules.url_policy)
    spec = JobSpec(
        repo=repo_url.url,
        ref=check_ref(ref) if ref is not None else None,
        command=check_command(command, rules) if command is not None else None,
        env=check_env(env or {}, rules),
        limits=resolve_limits(limits or {}, rules, timeout=timeout, network=network),
        runtime=rules.runtimes.check(runtime) if runtime is not None else None,
        setup=check_command(setup, rules, field="setup") if setup is not None else None,
    )
    return spec, repo_url
