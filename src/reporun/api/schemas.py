"""Request and response bodies of the v1 API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from reporun.jobs import Job, JobStatus
from reporun.store import WorkerRecord


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    memory: Annotated[int | None, Field(description="bytes of address space")] = None
    processes: int | None = None
    log: Annotated[int | None, Field(description="bytes of log kept")] = None
    disk: Annotated[int | None, Field(description="bytes of workspace and of /tmp")] = None
    network: bool | None = None


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo: Annotated[str, Field(max_length=4096, examples=["https://github.com/octo/hello.git"])]
    ref: Annotated[str | None, Field(max_length=255)] = None
    command: Annotated[str | None, Field(max_length=65536)] = None
    timeout: Annotated[int | None, Field(description="seconds")] = None
    env: dict[str, str] | None = None
    limits: LimitsIn | None = None


class LimitsOut(BaseModel):
    timeout: int
    memory: int
    processes: int
    log: int
    disk: int
    network: bool


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

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(
            **job.model_dump(exclude={"limits", "env"}),
            wait_seconds=job.wait_seconds,
            run_seconds=job.run_seconds,
            limits=LimitsOut(**job.limits.model_dump(exclude={"timeout_set"})),
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
