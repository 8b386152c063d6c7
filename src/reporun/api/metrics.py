"""Totals of ended jobs for /metrics, kept up to date without rescanning history.

Jobs that ended before a settle horizon (a few minutes back, so every transaction that wrote
them has committed) are added up once and remembered; each scrape reads only the jobs that
ended since. Every replica of the API derives the same totals from the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

from reporun.store import EndedTotals, Store

SETTLE_SECONDS = 300.0


class EndedJobs:
    def __init__(self, buckets: Sequence[float], *, settle_seconds: float = SETTLE_SECONDS) -> None:
        self.buckets = tuple(buckets)
        self.settle = timedelta(seconds=settle_seconds)
        self._settled = EndedTotals.empty(len(self.buckets))
        self._settled_until: datetime | None = None
        self._lock = asyncio.Lock()

    async def totals(self, store: Store) -> EndedTotals:
        async with self._lock:
            horizon = await store.now() - self.settle
            if self._settled_until is None or horizon > self._settled_until:
                newly = await store.figures.ended_totals(
                    self.buckets, after=self._settled_until, until=horizon
                )
                self._settled = self._settled + newly
                self._settled_until = horizon
            recent = await store.figures.ended_totals(self.buckets, after=self._settled_until)
            return self._settled + recent
