"""The observer: every tick, look at the queue, ask the policy, make the scaler follow.

It also takes back the jobs of lost workers (so a pool scaled to zero still reaps them) and
logs, for each job that ended, the seed's figures: when it was posted, how long it waited and
how long it ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from reporun.errors import ConfigError
from reporun.observer.policy import (
    Candidate,
    Decision,
    Observation,
    PolicySettings,
    PolicyState,
    decide,
    pick_retirees,
)
from reporun.observer.results import ResultsFeed
from reporun.observer.scalers import Member, Scaler
from reporun.queue import QueueBackend
from reporun.retry import compute_backoff
from reporun.store import Store, WorkerRecord

logger = logging.getLogger("reporun.observer")

# Jobs are logged once they ended this long ago, so every transaction that ended them has
# committed before the observer moves past them.
SETTLE = timedelta(seconds=5)
FINISHED_BATCH = 1000


class Observer:
    def __init__(
        self,
        *,
        store: Store,
        queue: QueueBackend,
        scaler: Scaler,
        policy: PolicySettings,
        interval: float = 0.5,
        window: float = 10.0,
        results: ResultsFeed | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.scaler = scaler
        self.policy = policy
        self.interval = interval
        self.window = window
        # Kafka mode: the waits come from the `results` topic, as the seed designed.
        self.results = results
        self.state = PolicyState()
        self._logged_until: datetime | None = None
        self._logged_id: uuid.UUID | None = None
        self._advised: int | None = None  # the count an advisory scaler's last decision named

    async def run(self, stop: asyncio.Event) -> None:
        await self.scaler.prepare()
        reading = (
            asyncio.create_task(self.results.run(stop), name="results")
            if self.results is not None
            else None
        )
        try:
            await self._observe(stop)
        finally:
            if reading is not None:
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)

    async def _observe(self, stop: asyncio.Event) -> None:
        logger.info(
            "observer started",
            extra={
                "action": "observe",
                "scaler": self.scaler.name,
                "min": self.policy.min_workers,
                "max": self.policy.max_workers,
                "target_wait": self.policy.target_wait,
            },
        )
        failures = 0
        while not stop.is_set():
            try:
                await self.tick()
                failures = 0
                pause = self.interval
            except ConfigError:
                raise  # no tick fixes the configuration: stop, with its one line
            except Exception:
                failures += 1
                logger.warning("observer tick failed", exc_info=True, extra={"action": "tick"})
                pause = max(self.interval, compute_backoff(failures, base=0.5, cap=10.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)

    async def tick(self) -> Decision:
        if reaped := await self.queue.reap():
            logger.warning("reaped jobs of lost workers", extra={"action": "reap", "count": reaped})
        snapshot = await self.store.scaling.snapshot(self.window)
        members = await self.scaler.members()
        rows = await self.store.list_workers()
        states = {m.handle: _state_of(m, rows, snapshot.busy_workers) for m in members}
        waits, source = snapshot.waits, "database"
        if self.results is not None and self.results.reading:
            waits, source = self.results.recent(self.window), "results"
        seen = Observation(
            now=time.monotonic(),
            waits=waits,
            queued=snapshot.queued,
            running=snapshot.running,
            workers=len(members),
            oldest_queued_age=snapshot.oldest_queued_age,
            starting=sum(1 for state in states.values() if state is None),
        )
        decision = decide(seen, self.policy, self.state)
        self.state = decision.state
        # An advisory scaler's count is someone else's to follow: a hold that changes it (the
        # load went away before the pods came) is recorded too.
        acts = decision.direction != "hold" or self.scaler.advisory
        if acts and await self._apply(decision, members, states):
            await self._record(decision, seen, source)
        await self._log_finished(snapshot.at)
        return decision

    async def _apply(
        self, decision: Decision, members: Sequence[Member], states: Mapping[str, str | None]
    ) -> int:
        """Make the scaler follow; how many workers it started or retired (an advisory
        scaler: 1 when the count asked for changed, so that the decision is recorded)."""
        if self.scaler.advisory:
            changed = decision.desired != self._advised
            self._advised = decision.desired
            return int(changed)
        current = len(members)
        if decision.desired > current:
            # Retiring workers may still run a job: together they stay within the maximum.
            room = self.policy.max_workers - current - self.scaler.retiring_count()
            wanted = min(decision.desired - current, room)
            return await self.scaler.add(wanted) if wanted > 0 else 0
        candidates = [Candidate(m.handle, states[m.handle]) for m in members]
        retirees = pick_retirees(candidates, current - decision.desired)
        await self.scaler.retire(retirees)
        return len(retirees)

    async def _record(self, decision: Decision, seen: Observation, source: str) -> None:
        inputs = {
            "waits": len(seen.waits),
            "source": source,  # where the waits came from: the database or Kafka's results
            "p95": _round(decision.p95),
            "signal": _round(decision.signal),
            "oldest_queued_age": _round(seen.oldest_queued_age),
            "queued": seen.queued,
            "running": seen.running,
            "workers": seen.workers,
            "target_wait": self.policy.target_wait,
            "min": self.policy.min_workers,
            "max": self.policy.max_workers,
        }
        logger.info(
            "scaling decision",
            extra={
                "action": f"scale_{decision.direction}",
                "actual": seen.workers,
                "desired": decision.desired,
                "reason": decision.reason,
                **inputs,
            },
        )
        await self.store.scaling.record(
            scaler=self.scaler.name,
            direction=decision.direction,
            actual=seen.workers,
            desired=decision.desired,
            reason=decision.reason,
            inputs=inputs,
        )

    async def _log_finished(self, now: datetime) -> None:
        until = now - SETTLE
        if self._logged_until is None:  # start from now: the past was logged by its observer
            self._logged_until = until
            return
        ended = await self.store.scaling.finished_between(
            self._logged_until, until, limit=FINISHED_BATCH, after_id=self._logged_id
        )
        for job in ended:
            logger.info(
                "job finished",
                extra={
                    "action": "job_finished",
                    "job_id": str(job.id),
                    "owner": job.owner,
                    "status": job.status,
                    "posted_at": job.created_at.isoformat(),
                    "wait_seconds": _round(job.wait_seconds),
                    "run_seconds": _round(job.run_seconds),
                    "finished_at": job.finished_at.isoformat(),
                },
            )
        if len(ended) == FINISHED_BATCH:  # more may be left: go on from the last one
            self._logged_until, self._logged_id = ended[-1].finished_at, ended[-1].id
        else:
            self._logged_until, self._logged_id = until, None


def _state_of(
    member: Member, rows: Sequence[WorkerRecord], busy: Mapping[str, uuid.UUID]
) -> str | None:
    """What a member is doing: busy when the jobs table says it holds a running job (fresher
    than its heartbeat), else what its heartbeat said; None when it has not reported yet."""
    mine = [row for row in rows if member.matches(row.host, row.pid)]
    if not mine:
        return None
    if any(row.id in busy for row in mine):
        return "busy"
    states = {row.state for row in mine}
    return "draining" if "draining" in states else "idle"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
