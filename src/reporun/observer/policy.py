"""How many workers: pure code, from what the queue looks like now.

The signal is queue wait, not CPU: the p95 wait of jobs that started in the recent window, and
the age of the oldest job still queued (while every worker is busy no job starts, so finished
waits alone would see a pile-up only after it cleared). Over target, the pool grows at once,
in proportion to the breach (as Kubernetes' HPA sizes a step: workers x signal / target), but
never past the work there is (running + queued jobs) nor the maximum. Under target it shrinks
only to the largest count recommended during the cooldown (HPA's stabilization window), so a
brief lull never drops workers the next burst needs, and to no fewer than the jobs running:
scale-in takes idle workers only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

Direction = Literal["out", "in", "hold"]


@dataclass(frozen=True, slots=True)
class PolicySettings:
    target_wait: float = 2.0  # seconds, p95
    min_workers: int = 1
    max_workers: int = 4
    cooldown: float = 60.0  # seconds under target before scaling in
    tolerance: float = 0.1  # a signal within target x (1 + tolerance) is not a breach

    def __post_init__(self) -> None:
        if not 0 <= self.min_workers <= self.max_workers:
            raise ValueError("need 0 <= min_workers <= max_workers")
        if self.target_wait <= 0 or self.cooldown < 0 or self.tolerance < 0:
            raise ValueError("target_wait must be positive, cooldown and tolerance not negative")


@dataclass(frozen=True, slots=True)
class Observation:
    """The queue at one instant (`now`, seconds on any monotonic clock)."""

    now: float
    waits: Sequence[float]  # queue waits of the jobs that started within the window
    queued: int
    running: int
    workers: int  # workers there are (starting or alive), draining ones not counted
    oldest_queued_age: float | None = None  # seconds the oldest queued job has waited so far
    starting: int = 0  # of `workers`, those not yet ready (started, not heard from)


@dataclass(frozen=True, slots=True)
class PolicyState:
    """What the policy remembers between decisions: since when it has watched, and its
    recommendations (time, count) of the last cooldown."""

    since: float | None = None
    recommendations: tuple[tuple[float, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    desired: int
    direction: Direction
    reason: str
    signal: float | None  # the wait that was compared with the target
    p95: float | None
    state: PolicyState = field(repr=False)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def decide(seen: Observation, settings: PolicySettings, state: PolicyState) -> Decision:
    p95 = percentile(seen.waits, 95)
    signal = max((v for v in (p95, seen.oldest_queued_age) if v is not None), default=None)
    work = seen.running + seen.queued  # workers that could be busy right now
    current = seen.workers
    target = settings.target_wait
    if signal is not None and signal > target * (1 + settings.tolerance):
        # Over target: never fewer; more only while jobs wait that no worker holds. Sized on
        # the workers that are up: those still starting have not been able to help yet, and
        # counting them would compound the step every tick until they are (HPA does the same
        # with pods not ready).
        ready = max(current - seen.starting, 0)
        proportional = math.ceil(max(ready, 1) * signal / target)
        recommended = max(current, min(max(proportional, ready + 1), work))
        reason = f"wait {signal:.2f} s over target {target:g} s, {seen.queued} queued"
    else:
        # Within target: no more workers (but one when there are none and a job waits).
        recommended = max(min(work, current), 1 if work else 0)
        reason = "no waits seen" if signal is None else f"wait {signal:.2f} s within {target:g} s"
    if _clamp(recommended, settings) > recommended:
        reason = f"below the minimum of {settings.min_workers}"
    recommended = _clamp(recommended, settings)

    horizon = seen.now - settings.cooldown
    history = tuple((t, n) for t, n in state.recommendations if t > horizon)
    history += ((seen.now, recommended),)
    since = seen.now if state.since is None else state.since
    state = replace(state, since=since, recommendations=history)

    if recommended > current:
        return Decision(recommended, "out", reason, signal, p95, state)
    # Shrink only as far as every recommendation of the cooldown allows.
    stable = max(n for _, n in history)
    if stable < current and seen.now - since >= settings.cooldown:
        reason = f"{reason}; under target for {settings.cooldown:g} s"
        return Decision(stable, "in", reason, signal, p95, state)
    return Decision(current, "hold", reason, signal, p95, state)


def _clamp(count: int, settings: PolicySettings) -> int:
    return max(settings.min_workers, min(settings.max_workers, count))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A worker the scaler could drain: its handle (pid, container id) and what it is doing
    (`None`: started, not yet heard from)."""

    handle: str
    state: str | None


def pick_retirees(candidates: Sequence[Candidate], count: int) -> list[str]:
    """Which workers to drain for scale-in: ones not heard from yet (they hold no job), then
    idle ones; never a busy or draining one."""
    order = [c for c in candidates if c.state is None] + [
        c for c in candidates if c.state == "idle"
    ]
    return [c.handle for c in order[: max(count, 0)]]
