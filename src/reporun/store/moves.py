"""The one way a stored job changes state: a guarded UPDATE whose move `check_transition`
allows."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from reporun.jobs import Job, JobStatus, check_transition, sources_of
from reporun.store.tables import jobs


def job_of(row: sa.Row[Any]) -> Job:
    return Job.model_validate(dict(row._mapping))


async def transition(
    conn: AsyncConnection,
    job_id: uuid.UUID | sa.ScalarSelect[Any],
    target: JobStatus,
    *,
    sources: Iterable[JobStatus] | None = None,
    where: Sequence[sa.ColumnElement[bool]] = (),
    values: dict[str, Any] | None = None,
) -> Job | None:
    """Move a job to `target` if it is in one of `sources` (default: every state that may move
    there) and matches `where`; None when it did not."""
    allowed = frozenset(sources) if sources is not None else sources_of(target)
    for source in allowed:
        check_transition(source, target)
    stmt = (
        sa.update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status.in_([s.value for s in allowed]), *where)
        .values(status=target.value, **(values or {}))
        .returning(*jobs.c)
    )
    row = (await conn.execute(stmt)).first()
    return job_of(row) if row is not None else None
