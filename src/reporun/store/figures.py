"""What /metrics reads: pending jobs, and totals of ended jobs (counts by status, histograms of
queue wait and run time) over spans of time that add up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from reporun.jobs import TERMINAL, WORKER_PHASES, JobStatus
from reporun.store.dialect import seconds_between
from reporun.store.tables import jobs

Histogram = tuple[list[int], float, int]  # cumulative bucket counts, sum, count


@dataclass(frozen=True, slots=True)
class EndedTotals:
    """What /metrics says of ended jobs; totals of disjoint spans of time add up."""

    finished: dict[str, int]
    wait: Histogram
    run: Histogram
    # Per phase (reporun.jobs.WORKER_PHASES and report), on buckets of their own.
    phases: dict[str, Histogram] = field(default_factory=dict)

    @classmethod
    def empty(cls, buckets: int) -> EndedTotals:
        return cls({}, ([0] * buckets, 0.0, 0), ([0] * buckets, 0.0, 0))

    def __add__(self, other: EndedTotals) -> EndedTotals:
        finished = dict(self.finished)
        for status, count in other.finished.items():
            finished[status] = finished.get(status, 0) + count
        phases = dict(self.phases)
        for name, histogram in other.phases.items():
            phases[name] = _add(phases[name], histogram) if name in phases else histogram
        return EndedTotals(finished, _add(self.wait, other.wait), _add(self.run, other.run), phases)


def _add(a: Histogram, b: Histogram) -> Histogram:
    return [x + y for x, y in zip(a[0], b[0], strict=True)], a[1] + b[1], a[2] + b[2]


class Figures:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def pending_counts(self) -> dict[str, int]:
        """Queued and running jobs (index-backed, whatever the history)."""
        pending = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
        stmt = (
            sa.select(jobs.c.status, sa.func.count())
            .where(jobs.c.status.in_(pending))
            .group_by(jobs.c.status)
        )
        async with self.engine.connect() as conn:
            counts = {row[0]: int(row[1]) for row in await conn.execute(stmt)}
        return {status: counts.get(status, 0) for status in pending}

    async def ended_by_owner(
        self, *, after: datetime | None, until: datetime
    ) -> dict[tuple[str, str], int]:
        """How many jobs of each owner ended in (after, until], by status (the index on
        finished_at bounds the span; the first span, from the beginning, reads them all)."""
        stmt = (
            sa.select(jobs.c.owner, jobs.c.status, sa.func.count())
            .where(jobs.c.finished_at <= until)
            .group_by(jobs.c.owner, jobs.c.status)
        )
        if after is not None:
            stmt = stmt.where(jobs.c.finished_at > after)
        async with self.engine.connect() as conn:
            return {(row[0], row[1]): int(row[2]) for row in await conn.execute(stmt)}

    async def phase_totals(
        self,
        buckets: Sequence[float],
        *,
        after: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, Histogram]:
        """Histograms of the phases (reporun.jobs.PHASES) of the jobs that ended in
        (after, until]: the wait, the worker's (from each job's phase_seconds) and `report`,
        the rest of its run."""
        dialect = self.engine.dialect.name
        run = seconds_between(jobs.c.started_at, jobs.c.finished_at, dialect)
        started = jobs.c.started_at.is_not(None)
        wait = seconds_between(jobs.c.created_at, jobs.c.started_at, dialect)
        timings = {name: jobs.c.phase_seconds[name].as_float() for name in WORKER_PHASES}
        timed = sum((sa.func.coalesce(v, 0.0) for v in timings.values()), sa.literal(0.0))
        reported = started & jobs.c.finished_at.is_not(None)
        values: dict[str, sa.ColumnElement[Any]] = {
            "wait": sa.case((started, wait), else_=None),
            **timings,
            # The rest of its run (never below 0, as the job's own `phases` shows it).
            "report": sa.case((reported & (run < timed), 0.0), (reported, run - timed), else_=None),
        }
        columns: list[sa.ColumnElement[Any]] = []
        for value in values.values():
            present = value.is_not(None)
            columns += [
                sa.func.coalesce(sa.func.sum(sa.case((present, 1), else_=0)), 0),
                sa.func.coalesce(sa.func.sum(sa.case((present, value), else_=0.0)), 0.0),
                *(
                    sa.func.coalesce(sa.func.sum(sa.case((value <= b, 1), else_=0)), 0)
                    for b in buckets
                ),
            ]
        stmt = sa.select(*columns).where(
            jobs.c.status.in_([s.value for s in TERMINAL]), jobs.c.finished_at.is_not(None)
        )
        if after is not None:
            stmt = stmt.where(jobs.c.finished_at > after)
        if until is not None:
            stmt = stmt.where(jobs.c.finished_at <= until)
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).one()
        found: dict[str, Histogram] = {}
        width = 2 + len(buckets)
        for index, name in enumerate(values):
            part = row[index * width : (index + 1) * width]
            found[name] = ([int(v) for v in part[2:]], float(part[1]), int(part[0]))
        return found

    async def ended_totals(
        self,
        buckets: Sequence[float],
        *,
        after: datetime | None = None,
        until: datetime | None = None,
    ) -> EndedTotals:
        """Jobs that ended in (after, until]: counts by status, and histograms (cumulative
        buckets, sum, count) of queue wait and run time."""
        dialect = self.engine.dialect.name
        wait = seconds_between(jobs.c.created_at, jobs.c.started_at, dialect)
        run = seconds_between(jobs.c.started_at, jobs.c.finished_at, dialect)
        started = jobs.c.started_at.is_not(None)

        def count_if(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
            return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

        def total(span: sa.ColumnElement[float]) -> sa.ColumnElement[float]:
            return sa.func.coalesce(sa.func.sum(sa.case((started, span), else_=0.0)), 0.0)

        columns = [
            sa.func.count(),
            count_if(started),
            total(wait),
            total(run),
            *(count_if(sa.and_(started, wait <= b)) for b in buckets),
            *(count_if(sa.and_(started, run <= b)) for b in buckets),
        ]
        stmt = (
            sa.select(jobs.c.status, *columns)
            .where(jobs.c.status.in_([s.value for s in TERMINAL]), jobs.c.finished_at.is_not(None))
            .group_by(jobs.c.status)
        )
        if after is not None:
            stmt = stmt.where(jobs.c.finished_at > after)
        if until is not None:
            stmt = stmt.where(jobs.c.finished_at <= until)
        totals = EndedTotals.empty(len(buckets))
        n = len(buckets)
        async with self.engine.connect() as conn:
            for row in await conn.execute(stmt):
                counted, timed, wait_sum, run_sum = (int(row[1]), int(row[2]), row[3], row[4])
                part = EndedTotals(
                    finished={row[0]: counted},
                    wait=([int(v) for v in row[5 : 5 + n]], float(wait_sum), timed),
                    run=([int(v) for v in row[5 + n : 5 + 2 * n]], float(run_sum), timed),
                )
                totals = totals + part
        return totals

    async def recent(
        self, since: datetime, *, limit: int = 100_000
    ) -> tuple[list[tuple[datetime, float]], list[datetime]]:
        """The dashboard's charts: (start, queue wait) of the jobs that started after `since`,
        and when each job that ended after it ended (index on started_at and on finished_at;
        at most `limit` of each, the newest)."""
        started = (
            sa.select(jobs.c.started_at, jobs.c.created_at, jobs.c.requeued_at)
            .where(jobs.c.started_at > since)
            .order_by(jobs.c.started_at.desc())
            .limit(limit)
        )
        ended = (
            sa.select(jobs.c.finished_at)
            .where(jobs.c.finished_at > since)
            .order_by(jobs.c.finished_at.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            waits = [
                (
                    row.started_at,
                    (row.started_at - (row.requeued_at or row.created_at)).total_seconds(),
                )
                for row in await conn.execute(started)
            ]
            finished = [row[0] for row in await conn.execute(ended)]
        return waits, finished
