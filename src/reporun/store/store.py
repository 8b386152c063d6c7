"""Repository functions over the tables: jobs, their logs, the workers. Every job state change
goes through `moves.transition`; the rows of running jobs are `runs`, the figures /metrics
reads are `figures`."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from math import ceil
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from reporun.errors import InvalidInput, NotFound, QuotaExceeded
from reporun.jobs import Job, JobSpec, JobStatus
from reporun.store.dialect import clock, lock_owner, read_clock
from reporun.store.engine import create_engine
from reporun.store.figures import Figures
from reporun.store.logs import Logs
from reporun.store.moves import job_of, transition
from reporun.store.outbox import Outbox, OutboxRecords
from reporun.store.runs import Runs
from reporun.store.scaling import ScalingRecords
from reporun.store.sessions import Sessions
from reporun.store.tables import jobs, workers
from reporun.store.tokens import TokenRecords


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    id: str
    host: str
    pid: int
    state: str
    current_job: uuid.UUID | None
    started_at: datetime
    heartbeat_at: datetime


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Job]
    next_cursor: str | None


def _fair_tag(owner: str) -> sa.ColumnElement[int]:
    """Start-time fair queuing: an owner's next job goes one step after its last queued one,
    but never before the head of the queue, so a newcomer waits only for the jobs already at
    the front, not for another owner's whole backlog."""
    queued = jobs.c.status == JobStatus.QUEUED.value
    head = sa.func.coalesce(
        sa.select(sa.func.min(jobs.c.fair_tag)).where(queued).scalar_subquery(),
        sa.select(sa.func.coalesce(sa.func.max(jobs.c.fair_tag), 0)).scalar_subquery(),
    )
    after_own = (
        sa.select(sa.func.max(jobs.c.fair_tag) + 1)
        .where(queued, jobs.c.owner == owner)
        .scalar_subquery()
    )
    return sa.case((after_own > head, after_own), else_=head)


@dataclass(frozen=True, slots=True)
class Quota:
    """What one owner may have: jobs queued or running, submissions in the last minute
    (0: no limit)."""

    pending: int = 0
    per_minute: int = 0

    def too_many_pending(self, pending: int) -> QuotaExceeded:
        # A full pending quota frees up when a job ends: no way to know when, so a short hint.
        return QuotaExceeded(
            f"{pending} jobs queued or running, the most allowed is {self.pending}",
            retry_after=5,
        )

    def too_fast(self, wait: float = 60.0) -> QuotaExceeded:
        return QuotaExceeded(
            f"more than {self.per_minute} submissions a minute", retry_after=max(1, ceil(wait))
        )


def _count_pending(owner: str) -> sa.Select[Any]:
    pending = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
    return sa.select(sa.func.count()).where(jobs.c.owner == owner, jobs.c.status.in_(pending))


def _within(quota: Quota, owner: str, now: Any) -> list[sa.ColumnElement[bool]]:
    conditions = []
    if quota.pending:
        conditions.append(_count_pending(owner).scalar_subquery() < quota.pending)
    if quota.per_minute:
        since = now - timedelta(seconds=60)
        if isinstance(since, datetime):
            since = sa.literal(since, type_=jobs.c.created_at.type)
        recent = sa.select(sa.func.count()).where(jobs.c.owner == owner, jobs.c.created_at > since)
        conditions.append(recent.scalar_subquery() < quota.per_minute)
    return conditions


def encode_cursor(created_at: datetime, job_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, job_id = raw.split("|")
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        return created_at.astimezone(UTC), uuid.UUID(job_id)
    except (ValueError, OverflowError, UnicodeDecodeError, binascii.Error):
        raise InvalidInput("cursor is not one this server gave out", field="cursor") from None


class Store:
    """Jobs, their logs, the workers and the local tokens, on SQLite or PostgreSQL."""

    def __init__(self, engine: AsyncEngine, outbox: Outbox | None = None) -> None:
        self.engine = engine
        # Kafka mode: every job queued and every end is announced through the outbox.
        self.outbox = outbox
        self.outbox_rows = OutboxRecords(engine)
        self.runs = Runs(engine, outbox)
        self.figures = Figures(engine)
        self.logs = Logs(engine)
        self.scaling = ScalingRecords(engine)
        self.tokens = TokenRecords(engine)
        self.sessions = Sessions(engine)

    @classmethod
    def open(cls, url: str, *, read_only: bool = False, outbox: Outbox | None = None) -> Store:
        return cls(create_engine(url, read_only=read_only), outbox)

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    # Jobs -----------------------------------------------------------------------------------
    async def create_job(
        self,
        spec: JobSpec,
        owner: str,
        *,
        now: datetime | None = None,
        quota: Quota | None = None,
    ) -> Job:
        """Store a queued job. Within `quota`, checked in the same statement as the insert, so
        concurrent submissions never get past it."""
        values = {
            "id": uuid.uuid4(),
            "owner": owner,
            "repo": spec.repo,
            "ref": spec.ref,
            "command": spec.command,
            "env": spec.env,
            "limits": spec.limits.model_dump(),
            "local_sources": spec.local_sources,
            "network_open": spec.network_open,
            "runtime_requested": spec.runtime,
            "setup": spec.setup,
            "rerun_of": spec.rerun_of,
            "status": JobStatus.QUEUED.value,
        }
        columns = [*values, "created_at", "fair_tag"]
        # One statement, so the tag is computed under the insert's write lock (SQLite), after
        # the owner's lock (PostgreSQL).
        current = now if now is not None else clock(self.engine)
        created = (
            sa.literal(current, type_=jobs.c.created_at.type)
            if isinstance(current, datetime)
            else current
        )
        source = sa.select(
            *(sa.literal(v, type_=jobs.c[k].type).label(k) for k, v in values.items()),
            created.label("created_at"),
            _fair_tag(owner).label("fair_tag"),
        )
        if quota is not None:
            source = source.where(*_within(quota, owner, current))
        async with self.engine.begin() as conn:
            await lock_owner(conn, owner)
            row = (
                await conn.execute(sa.insert(jobs).from_select(columns, source).returning(*jobs.c))
            ).first()
            if row is not None and self.outbox is not None:
                await self.outbox.record(conn, job_of(row))
        if row is None:
            assert quota is not None
            raise await self._over_quota(quota, owner)
        return job_of(row)

    async def _over_quota(self, quota: Quota, owner: str) -> QuotaExceeded:
        pending, recent, oldest = 0, 0, None
        async with self.engine.connect() as conn:
            if quota.pending:
                pending = int((await conn.execute(_count_pending(owner))).scalar() or 0)
            if quota.per_minute:
                since = clock(self.engine) - timedelta(seconds=60)
                row = (
                    await conn.execute(
                        sa.select(sa.func.count(), sa.func.min(jobs.c.created_at)).where(
                            jobs.c.owner == owner, jobs.c.created_at > since
                        )
                    )
                ).one()
                recent, oldest = int(row[0]), row[1]
        if quota.per_minute and recent >= quota.per_minute:
            wait = 60.0
            if oldest is not None:
                oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
                wait = 60.0 - (await self.now() - oldest).total_seconds()
            return quota.too_fast(wait)
        return quota.too_many_pending(pending)

    async def get_job(self, job_id: uuid.UUID, *, owner: str | None = None) -> Job:
        """The job; NotFound also when `owner` is given and the job is someone else's."""
        stmt = sa.select(jobs).where(jobs.c.id == job_id)
        if owner is not None:
            stmt = stmt.where(jobs.c.owner == owner)
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return job_of(row)

    async def get_jobs(self, job_ids: list[uuid.UUID]) -> list[Job]:
        """Those of the jobs that exist, in one read."""
        if not job_ids:
            return []
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(jobs).where(jobs.c.id.in_(job_ids)))
            return [job_of(row) for row in rows]

    async def list_jobs(
        self,
        *,
        owner: str | None,
        status: JobStatus | None = None,
        repo: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """Newest first, keyset-paginated (no OFFSET); `repo` is matched exactly."""
        stmt = sa.select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)
        if owner is not None:
            stmt = stmt.where(jobs.c.owner == owner)
        if status is not None:
            stmt = stmt.where(jobs.c.status == status.value)
        if repo is not None:
            stmt = stmt.where(jobs.c.repo == repo)
        if cursor:
            created_at, job_id = decode_cursor(cursor)
            # A row comparison: one range scan of the (owner,) created_at, id index.
            stmt = stmt.where(
                sa.tuple_(jobs.c.created_at, jobs.c.id)
                < sa.tuple_(
                    sa.literal(created_at, type_=jobs.c.created_at.type),
                    sa.literal(job_id, type_=jobs.c.id.type),
                )
            )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        items = [job_of(row) for row in rows[:limit]]
        more = len(rows) > limit
        next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if more else None
        return Page(items, next_cursor)

    async def count_by_status(
        self, *, owner: str | None, repo: str | None = None, ended_after: datetime | None = None
    ) -> dict[JobStatus, int]:
        """How many jobs there are in each state (of `owner`, of `repo`), every state named;
        with `ended_after`, only those still pending and those that ended after it."""
        stmt = sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
        if owner is not None:
            stmt = stmt.where(jobs.c.owner == owner)
        if repo is not None:
            stmt = stmt.where(jobs.c.repo == repo)
        if ended_after is not None:
            pending = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
            stmt = stmt.where(sa.or_(jobs.c.status.in_(pending), jobs.c.finished_at > ended_after))
        async with self.engine.connect() as conn:
            counted = {row[0]: int(row[1]) for row in await conn.execute(stmt)}
        return {status: counted.get(status.value, 0) for status in JobStatus}

    async def reruns_of(self, job_id: uuid.UUID, *, limit: int = 20) -> list[Job]:
        """The jobs that re-run this one, newest first."""
        stmt = (
            sa.select(jobs)
            .where(jobs.c.rerun_of == job_id)
            .order_by(jobs.c.created_at.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [job_of(row) for row in await conn.execute(stmt)]

    async def cancel(self, job_id: uuid.UUID, *, owner: str | None = None) -> Job:
        """Flag the job, and end it at once if it is queued; a running job's worker sees the
        flag and kills it. Flag and move share one transaction, so no requeue slips between."""
        await self.get_job(job_id, owner=owner)
        pending = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status.in_(pending))
                .values(cancel_requested=True)
            )
            await transition(
                conn,
                job_id,
                JobStatus.CANCELLED,
                sources=[JobStatus.QUEUED],
                values={"finished_at": clock(self.engine), "reason": "cancelled before it started"},
                outbox=self.outbox,
            )
        return await self.get_job(job_id)

    # Workers --------------------------------------------------------------------------------
    async def worker_heartbeat(
        self,
        worker_id: str,
        *,
        host: str,
        pid: int,
        state: str,
        current_job: uuid.UUID | None,
    ) -> None:
        now = clock(self.engine)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                sa.update(workers)
                .where(workers.c.id == worker_id)
                .values(state=state, current_job=current_job, heartbeat_at=now)
            )
            if result.rowcount == 0:
                await conn.execute(
                    sa.insert(workers).values(
                        id=worker_id,
                        host=host,
                        pid=pid,
                        state=state,
                        current_job=current_job,
                        started_at=now,
                        heartbeat_at=now,
                    )
                )

    async def list_workers(self, *, alive_within: float | None = None) -> list[WorkerRecord]:
        stmt = sa.select(workers).order_by(workers.c.started_at)
        if alive_within is not None:
            stmt = stmt.where(
                workers.c.heartbeat_at >= clock(self.engine) - timedelta(seconds=alive_within)
            )
        async with self.engine.connect() as conn:
            return [WorkerRecord(**dict(row._mapping)) for row in await conn.execute(stmt)]

    async def remove_worker(self, worker_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(sa.delete(workers).where(workers.c.id == worker_id))

    async def prune_workers(self, *, older_than: float) -> int:
        """Forget workers whose heartbeat stopped long ago."""
        cutoff = clock(self.engine) - timedelta(seconds=older_than)
        async with self.engine.begin() as conn:
            result = await conn.execute(sa.delete(workers).where(workers.c.heartbeat_at < cutoff))
        return int(result.rowcount or 0)

    # Time ----------------------------------------------------------------------------------
    async def now(self) -> datetime:
        """The time on the clock the store's timestamps use (see `dialect.clock`)."""
        current = clock(self.engine)
        if isinstance(current, datetime):
            return current
        async with self.engine.connect() as conn:
            return await read_clock(conn)
