"""The jobs page's counts by status, cheap over any history.

A job that ended some minutes ago never changes again, so the counts of those, by owner and
status, are added up once per API process and from then on only from where the last sum
stopped (as /metrics adds up its ended jobs), at most once a minute. What is still pending or
ended since is counted afresh on each page, from the indexes on status and finished_at. A
repository filter counts that repository's jobs directly (its index bounds them).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from reporun.jobs import JobStatus
from reporun.store import Store

SETTLE_SECONDS = 300.0  # longer than any clock skew between the API's database and itself
FOLD_EVERY = 60.0  # how far the horizon moves before the settled counts are added to


@dataclass(frozen=True, slots=True)
class Settled:
    """Jobs that ended by `until`: by owner, and everyone's (one snapshot, never changed)."""

    until: datetime | None = None
    by_owner: dict[str, dict[str, int]] = field(default_factory=dict)
    everyone: dict[str, int] = field(default_factory=dict)


class StatusCounts:
    def __init__(
        self, settle_seconds: float = SETTLE_SECONDS, fold_every: float = FOLD_EVERY
    ) -> None:
        self.settle = timedelta(seconds=settle_seconds)
        self.fold_every = timedelta(seconds=fold_every)
        self._settled = Settled()
        self._lock = asyncio.Lock()

    async def of(
        self, store: Store, *, owner: str | None, repo: str | None = None
    ) -> dict[JobStatus, int]:
        """Every state with its count, of `owner` (None: everyone's) and of `repo`."""
        if repo is not None:
            return await store.count_by_status(owner=owner, repo=repo)
        settled = await self._fold(store)
        counts = await store.count_by_status(owner=owner, ended_after=settled.until)
        before = settled.everyone if owner is None else settled.by_owner.get(owner, {})
        for status, number in before.items():
            counts[JobStatus(status)] += number
        return counts

    async def _fold(self, store: Store) -> Settled:
        """The settled counts, first brought up to the horizon when it moved far enough."""
        async with self._lock:
            old = self._settled
            horizon = await store.now() - self.settle
            if old.until is not None and horizon - old.until < self.fold_every:
                return old
            newly = await store.figures.ended_by_owner(after=old.until, until=horizon)
            by_owner = dict(old.by_owner)
            everyone = dict(old.everyone)
            for (owner, status), number in newly.items():
                mine = by_owner[owner] = dict(by_owner.get(owner, {}))
                mine[status] = mine.get(status, 0) + number
                everyone[status] = everyone.get(status, 0) + number
            self._settled = Settled(horizon, by_owner, everyone)
            return self._settled
