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
    breach = signal is not None and signal > target * (1 + settings.tolerance)
    if breach:
        assert signal is not None
        # Over target: never fewer; more only while jobs wait that no worker holds. Sized on
        # the workers that are up: those still starting have not been able to help yet, and
        # counting them would compound the step every tick until they are (HPA does the same
        # with pods not ready).
        ready = max(current - seen.starting, 0)
        proportional = math.ceil(max(ready, 1) * signal / target)
        wanted = max(current, min(max(proportional, ready + 1), work))
    else:
        # Within target: no more workers (but one when there are none and a job waits).
        wanted = max(min(work, current), 1 if work else 0)
    recommended = _clamp(wanted, settings)

    horizon = seen.now - settings.cooldown
    history = tuple((t, n) for t, n in state.recommendations if t > horizon)
    history += ((seen.now, recommended),)
    since = seen.now if state.since is None else state.since
    state = replace(state, since=since, recommendations=history)
    # Shrink only as far as every recommendation of the cooldown allows.
    stable = max(n for _, n in history)
    cooled = seen.now - since >= settings.cooldown  # watched for a whole cooldown

    direction: Direction
    if recommended > current:
        desired, direction = recommended, "out"
    elif stable < current and cooled:
        desired, direction = stable, "in"
    else:
        desired, direction = current, "hold"
    why = _Why(seen, settings, p95, wanted, recommended, desired, direction, cooled, breach)
    return Decision(desired, direction, why.text(), signal, p95, state)


@dataclass(frozen=True, slots=True)
class _Why:
    """A decision in words an operator reads at once: what was seen, with units and rounded
    figures, then what follows (`2 -> 4`, `holding at 3`, `down to the minimum 1`)."""

    seen: Observation
    settings: PolicySettings
    p95: float | None
    wanted: int  # before the minimum and maximum
    recommended: int  # within them
    desired: int
    direction: Direction
    cooled: bool
    breach: bool

    def text(self) -> str:
        if self.direction == "out":
            return self._out()
        if self.direction == "in":
            return self._in()
        return self._hold()

    def _out(self) -> str:
        current, low = self.seen.workers, self.settings.min_workers
        move = f"{current} -> {self.desired}"
        if self.wanted < low:
            return f"{_workers(current)}, under the minimum {low}: {move}"
        if self.breach:
            capped = " (the maximum)" if self.wanted > self.desired else ""
            return f"{self._wait()} over the {self._target()}{self._queue()}: {move}{capped}"
        return f"{self.seen.queued} queued and no worker: {move}"

    def _in(self) -> str:
        current, high = self.seen.workers, self.settings.max_workers
        if current > high and self.desired == high:
            return f"{_workers(current)}, over the maximum {high}: down to {high}"
        if self.desired == self.settings.min_workers:
            return (
                f"{self._idle()}: down to the minimum {self.desired}, "
                f"no more were needed for {self._cooldown()}"
            )
        return (
            f"{self._idle()}: {current} -> {self.desired}, "
            f"the most needed in the last {self._cooldown()}"
        )

    def _hold(self) -> str:
        current, low, high = self.seen.workers, self.settings.min_workers, self.settings.max_workers
        holding = f"holding at {current}"
        if self.breach:
            over = f"{self._wait()} over the {self._target()}"
            if self.wanted > high and current >= high:
                return f"{over}{self._queue()}, but at the maximum {high}: {holding}"
            if self.seen.starting:
                starting = _workers(self.seen.starting, "still starting")
                return f"{over}{self._queue()}, {starting}: {holding}"
            if not self.seen.queued:
                return f"{over}, but nothing is queued now: {holding}"
            return f"{over}, but idle workers can take the {self.seen.queued} queued: {holding}"
        if self.recommended >= current:
            if self.wanted < current == low:
                return f"{self._idle()}: holding at the minimum {low}"
            return f"{self._within()}: {holding}"
        if not self.cooled:
            return f"{self._idle()}: {holding} for the first {self._cooldown()}"
        return f"{self._idle()}: {holding}, as many were needed in the last {self._cooldown()}"

    def _wait(self) -> str:
        """The signal, named after where it came from."""
        oldest = self.seen.oldest_queued_age
        if self.p95 is not None and (oldest is None or self.p95 >= oldest):
            return f"p95 wait {_seconds(self.p95)}"
        assert oldest is not None
        return f"oldest queued job waiting {_seconds(oldest)}"

    def _within(self) -> str:
        if self.p95 is None and self.seen.oldest_queued_age is None:
            running = self.seen.running
            jobs = f"{running} {'job' if running == 1 else 'jobs'}" if running else "no jobs"
            return f"{jobs} running, queue empty"
        within = f"within the {self._target()}"
        if max(self.p95 or 0, self.seen.oldest_queued_age or 0) > self.settings.target_wait:
            within = f"within {self.settings.tolerance:.0%} of the {self._target()}"
        return f"{self._wait()} {within}{self._queue()}"

    def _idle(self) -> str:
        """The idle workers and the queue: `4 workers idle, queue empty`."""
        current, running = self.seen.workers, self.seen.running
        if running:
            idle = f"{max(current - running, 0)} of {_workers(current, 'idle')}"
        else:
            idle = _workers(current, "idle")
        return f"{idle}{self._queue()}"

    def _queue(self) -> str:
        return f" with {self.seen.queued} queued" if self.seen.queued else ", queue empty"

    def _target(self) -> str:
        return f"{self.settings.target_wait:g} s target"

    def _cooldown(self) -> str:
        return f"{self.settings.cooldown:g} s"


def _workers(count: int, state: str = "") -> str:
    noun = "worker" if count == 1 else "workers"
    text = f"{count} {noun}" if count else f"no {noun}"
    return f"{text} {state}" if state else text


def _seconds(value: float) -> str:
    """`0.4 s`, `28.7 s`, `312 s`: rounded to what a person compares."""
    return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"


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
