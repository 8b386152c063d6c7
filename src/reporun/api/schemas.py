"""Request and response bodies of the v1 API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

# The server's own checks, stated in the document (one source for both).
from reporun.jobs import ENV_NAME_PATTERN, LIMIT_MINIMUMS, REF_PATTERN, Job, JobStatus
from reporun.runtimes import NAME_PATTERN
from reporun.store import WorkerRecord
from reporun.urlpolicy import MAX_URL_LENGTH


class Documented:
    """Constraints the document states but pydantic does not check: the server's own checks
    (jobs.py, urlpolicy.py) refuse these values with a 400 naming the field, as they did before
    the document said so, rather than a 422."""

    def __init__(self, **constraints: Any) -> None:
        self.constraints = constraints

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        documented = handler(schema)
        documented.update(self.constraints)
        return documented


def _maximum(setting: str, default: str) -> str:
    return f"; at most the server's REPORUN_{setting} ({default} by default)"


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    memory: Annotated[
        Annotated[int, Documented(minimum=LIMIT_MINIMUMS["memory"])] | None,
        Field(description="bytes of address space" + _maximum("MEMORY_MAX", "4 GiB")),
    ] = None
    processes: Annotated[
        Annotated[int, Documented(minimum=LIMIT_MINIMUMS["processes"])] | None,
        Field(description="processes and threads" + _maximum("PROCESSES_MAX", "1024")),
    ] = None
    log: Annotated[
        Annotated[int, Documented(minimum=LIMIT_MINIMUMS["log"])] | None,
        Field(description="bytes of log kept" + _maximum("LOG_LIMIT_MAX", "16 MiB")),
    ] = None
    disk: Annotated[
        Annotated[int, Documented(minimum=LIMIT_MINIMUMS["disk"])] | None,
        Field(description="bytes of workspace and of /tmp" + _maximum("DISK_MAX", "4 GiB")),
    ] = None


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo: Annotated[
        str,
        Field(
            max_length=4096,
            description="a git URL whose scheme and host this server's URL policy allows",
            examples=["https://github.com/octo/hello.git"],
        ),
        # pydantic refuses past 4096 characters (422), the URL policy past 2048 (400).
        Documented(minLength=1, maxLength=MAX_URL_LENGTH),
    ]
    ref: Annotated[
        Annotated[str, Field(max_length=255), Documented(pattern=REF_PATTERN.pattern)] | None,
        Field(description="a branch, tag or commit, as git check-ref-format takes it"),
    ] = None
    command: Annotated[
        Annotated[str, Field(max_length=65536), Documented(minLength=1)] | None,
        Field(
            description="a shell command, not blank"
            + _maximum("COMMAND_MAX_BYTES", "8192 bytes of UTF-8")
        ),
    ] = None
    setup: Annotated[
        Annotated[str, Field(max_length=65536), Documented(minLength=1)] | None,
        Field(
            description="a shell command run first, with network registries (installing the "
            "job's dependencies); what it adds to the workspace is kept for the next jobs of "
            "the same project. Default: the repository's reporun.toml `setup`, else none"
        ),
    ] = None
    timeout: Annotated[
        Annotated[int, Documented(minimum=LIMIT_MINIMUMS["timeout"])] | None,
        Field(description="seconds" + _maximum("TIMEOUT_MAX", "3600")),
    ] = None
    env: Annotated[
        Annotated[dict[str, str], Documented(propertyNames={"pattern": ENV_NAME_PATTERN.pattern})]
        | None,
        Field(
            description="variables for the job, not ones that steer the loader, the shell or "
            "reporun (LD_*, REPORUN_*, PATH, HOME, ...); at most the server's "
            "REPORUN_ENV_MAX_VARS variables and REPORUN_ENV_MAX_BYTES bytes (64 and 32 KiB "
            "by default)"
        ),
    ] = None
    limits: LimitsIn | None = None
    runtime: Annotated[
        Annotated[str, Field(max_length=64), Documented(pattern=NAME_PATTERN.pattern)] | None,
        Field(
            description="the runtime to run in, one of GET /v1/runtimes (default: the "
            "repository's reporun.toml `runtime`, else the server's default)",
            examples=["host"],
        ),
    ] = None
    network: Annotated[
        Literal["none", "registries", "open"] | None,
        Field(
            description="none (the default: no network at all); registries (only an HTTP(S) "
            "proxy to the package registries the server names); open (an isolated network, "
            "where the operator allows it, for admins or named users). Default: the repository's "
            "reporun.toml `network`, else none"
        ),
    ] = None

    def submission(self) -> dict[str, Any]:
        """The request as the submission service takes it (reporun.submit.Submissions)."""
        return {
            "repo": self.repo,
            "ref": self.ref,
            "command": self.command,
            "timeout": self.timeout,
            "env": self.env,
            "limits": self.limits.model_dump(exclude_none=True) if self.limits else None,
            "runtime": self.runtime,
            "network": self.network,
            "setup": self.setup,
        }


class RuntimeOut(BaseModel):
    name: str
    image: str | None = Field(description="the OCI image reference; null for host")
    default: bool = Field(description="whether a job that names no runtime gets this one")


class RuntimeList(BaseModel):
    items: list[RuntimeOut]


class LimitsOut(BaseModel):
    timeout: int
    memory: int
    processes: int
    log: int
    disk: int


class JobOut(BaseModel):
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
    wait_seconds: float | None
    run_seconds: float | None
    log_bytes: int
    log_truncated: bool
    cancel_requested: bool
    limits: LimitsOut
    env: list[str] = Field(description="names of the variables the job was given")
    runtime_requested: str | None = Field(
        None, description="the runtime the request named (null: reporun.toml's or the default)"
    )
    runtime: str | None = Field(
        description="the runtime the job runs in, from its start (null before)"
    )
    runtime_digest: str | None = Field(
        description="the digest of the runtime's image (null for host, or before the start)"
    )
    network: str = Field(description="the job's network mode: none, registries or open")
    setup: str | None = Field(None, description="the setup command (asked for, then the one run)")
    rerun_of: uuid.UUID | None = Field(None, description="the job this one re-runs, if any")
    phases: dict[str, float | None] = Field(
        default_factory=dict,
        description="seconds per phase: wait (created -> started), fetch, checkout, setup, "
        "sandbox_start, run, report (the rest of started -> finished: the worker's own steps "
        "and the end record); null where the job never reached it. Once it ended they add up "
        "to its time from creation to end.",
    )

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(
            # local_sources and network_open are the worker's business: the job's repo and
            # network already tell what was asked.
            **job.model_dump(
                exclude={
                    "limits",
                    "env",
                    "local_sources",
                    "network_open",
                    "log_epoch",
                    "phase_seconds",
                }
            ),
            phases=job.phases,
            wait_seconds=job.wait_seconds,
            run_seconds=job.run_seconds,
            limits=LimitsOut(
                **job.limits.model_dump(exclude={"timeout_set", "network", "network_set"})
            ),
            network=job.limits.network,
            env=sorted(job.env),
        )


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class WorkerOut(BaseModel):
    id: str
    host: str
    pid: int
    state: str
    current_job: uuid.UUID | None
    started_at: datetime
    last_heartbeat: datetime

    @classmethod
    def of(cls, row: WorkerRecord, *, running: uuid.UUID | None) -> WorkerOut:
        # The jobs table knows what a worker runs before its next heartbeat says so.
        state = row.state
        if running is not None and state == "idle":
            state = "busy"
        elif running is None and state == "busy":
            state = "idle"
        return cls(
            id=row.id,
            host=row.host,
            pid=row.pid,
            state=state,
            current_job=running,
            started_at=row.started_at,
            last_heartbeat=row.heartbeat_at,
        )


class WorkerPage(BaseModel):
    items: list[WorkerOut]


class DecisionOut(BaseModel):
    at: datetime
    scaler: str
    direction: str
    actual: int
    desired: int
    reason: str
    inputs: dict[str, Any]


class ScalingOut(BaseModel):
    actual: int = Field(description="workers with a recent heartbeat")
    desired: int | None = Field(description="what the newest decision asked for")
    decisions: list[DecisionOut] = Field(description="newest first")


class Ready(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str] = Field(examples=[{"database": "ok", "queue": "ok"}])


class LegacyJob(BaseModel):
    usuario: str
    key: uuid.UUID
    status: Literal["Queued", "Running", "Finished", "Failed"]


class PrometheusText(Response):
    """The media type /metrics answers, for the document."""

    media_type = CONTENT_TYPE_LATEST
