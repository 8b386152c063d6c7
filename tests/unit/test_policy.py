"""The scaling policy, table-driven: each case is a run of observations one second apart, with
the pool following the policy's decisions, and the worker counts the policy must ask for."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from reporun.observer.policy import (
    Candidate,
    Observation,
    PolicySettings,
    PolicyState,
    decide,
    percentile,
    pick_retirees,
)

SETTINGS = PolicySettings(target_wait=2.0, min_workers=1, max_workers=4, cooldown=10.0)


@dataclass(frozen=True)
class Tick:
    """What the queue looks like at second `t`; `workers` is what the pool has (the previous
    decision, unless the case forces it)."""

    waits: tuple[float, ...] = ()
    queued: int = 0
    running: int = 0
    oldest: float | None = None


def simulate(
    ticks: list[Tick], *, start: int, settings: PolicySettings = SETTINGS
) -> list[tuple[int, str]]:
    """(desired, direction) after each tick; the pool becomes what was desired."""
    state = PolicyState()
    workers = start
    out = []
    for t, tick in enumerate(ticks):
        seen = Observation(
            now=float(t),
            waits=tick.waits,
            queued=tick.queued,
            running=min(tick.running, workers),
            workers=workers,
            oldest_queued_age=tick.oldest,
        )
        decision = decide(seen, settings, state)
        state = decision.state
        out.append((decision.desired, decision.direction))
        workers = decision.desired
    return out


def desired(run: list[tuple[int, str]]) -> list[int]:
    return [n for n, _ in run]


def burst() -> list[Tick]:
    # 40 jobs arrive at once on one worker; the oldest job's age is what signals first.
    ticks = [Tick(queued=39, running=1, oldest=float(t)) for t in range(4)]
    ticks += [Tick(waits=(3.0, 3.5), queued=20, running=4, oldest=4.0) for _ in range(5)]
    ticks += [Tick(waits=(1.0,), queued=0, running=2) for _ in range(5)]
    ticks += [Tick() for _ in range(20)]
    return ticks


CASES: dict[str, tuple[list[Tick], int, Callable[[list[tuple[int, str]]], None]]] = {}


def case(ticks: list[Tick], start: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def register(check: Callable[[list[tuple[int, str]]], None]) -> Callable[..., None]:
        CASES[check.__name__] = (ticks, start, check)
        return check

    return register


@case(burst(), start=1)
def burst_grows_at_once_then_shrinks_after_the_cooldown(run: list[tuple[int, str]]) -> None:
    counts = desired(run)
    # 0 s and 2 s are within target (tolerance 10%); at 3 s it is 1.5x: ceil(1 x 3 / 2) = 2.
    assert counts[:4] == [1, 1, 1, 2]
    assert max(counts) == 4 and counts[4] == 4  # 4 s wait on 2 workers: x2 -> 4
    first_in = next(i for i, (_, d) in enumerate(run) if d == "in")
    last_breach = 8
    assert first_in >= last_breach + SETTINGS.cooldown
    assert counts[-1] == 1 and min(counts) == 1


@case([Tick(waits=(0.4, 0.6, 0.5), queued=1, running=2) for _ in range(60)], start=2)
def steady_load_holds(run: list[tuple[int, str]]) -> None:
    # Two busy workers and one job waiting half a second: the pool needs 3 but waits are
    # fine, so nothing moves up; nothing goes below the 3 jobs there are.
    assert {d for _, d in run} == {"hold"}, run


@case([Tick(running=0) for _ in range(30)], start=4)
def drain_to_the_minimum_after_the_cooldown(run: list[tuple[int, str]]) -> None:
    counts = desired(run)
    assert counts[: int(SETTINGS.cooldown)] == [4] * int(SETTINGS.cooldown)
    assert counts[int(SETTINGS.cooldown)] == 1 and counts[-1] == 1


@case([Tick() for _ in range(30)], start=1)
def zero_backlog_stays_at_the_minimum(run: list[tuple[int, str]]) -> None:
    assert run == [(1, "hold")] * 30


@case(
    [
        Tick(waits=(2.6 if t % 3 == 0 else 1.2,), queued=2 if t % 3 == 0 else 0, running=2)
        for t in range(60)
    ],
    start=2,
)
def noisy_waits_do_not_flap(run: list[tuple[int, str]]) -> None:
    directions = [d for _, d in run]
    assert "in" not in directions  # a breach every 3 s keeps the cooldown from ever passing
    assert directions.count("out") <= 2  # grows to the work there is, then holds


@case([Tick(running=3) for _ in range(30)], start=4)
def never_below_the_jobs_running(run: list[tuple[int, str]]) -> None:
    assert desired(run)[-1] == 3


@case([Tick(waits=(5.0,), queued=1, running=2, oldest=5.0) for _ in range(20)], start=4)
def a_breach_with_idle_workers_adds_none_and_drops_none(run: list[tuple[int, str]]) -> None:
    # Workers are idle, so a queued job is about to be claimed: more would not help.
    assert run == [(4, "hold")] * 20


@case([Tick(queued=100, running=4, oldest=60.0) for _ in range(5)], start=4)
def never_past_the_maximum(run: list[tuple[int, str]]) -> None:
    assert desired(run) == [4] * 5


@pytest.mark.parametrize("name", sorted(CASES))
def test_policy(name: str) -> None:
    ticks, start, check = CASES[name]
    check(simulate(ticks, start=start))


def test_scaling_out_is_sized_to_the_breach() -> None:
    big = PolicySettings(target_wait=2.0, min_workers=1, max_workers=100, cooldown=10.0)
    for oldest, expected in ((3.0, 3), (8.0, 8), (20.0, 20)):
        seen = Observation(
            now=0, waits=(), queued=500, running=2, workers=2, oldest_queued_age=oldest
        )
        assert decide(seen, big, PolicyState()).desired == expected
    # ... but never past the jobs there are.
    seen = Observation(now=0, waits=(), queued=3, running=2, workers=2, oldest_queued_age=20.0)
    assert decide(seen, big, PolicyState()).desired == 5


def test_workers_still_starting_hold_further_growth() -> None:
    """Ticks come faster than workers start: sized on the ready ones, the pool grows once
    per real change, not x2 on every tick while the oldest job's age keeps growing."""
    big = PolicySettings(target_wait=2.0, min_workers=1, max_workers=16, cooldown=10.0)
    state = PolicyState()
    workers, starting, counts = 1, 0, []
    for tick in range(5):
        seen = Observation(
            now=tick * 0.5,
            waits=(),
            queued=39,
            running=1,
            workers=workers,
            starting=starting,
            oldest_queued_age=2.5 + tick * 0.5,
        )
        decision = decide(seen, big, state)
        state = decision.state
        starting += decision.desired - workers  # none of them is up yet
        workers = decision.desired
        counts.append(workers)
    assert counts == [2, 2, 2, 2, 3], counts  # ready stays 1: ceil(1 x age / 2)
    # Once they are up, the step is sized on all of them.
    seen = Observation(
        now=3, waits=(), queued=39, running=3, workers=3, starting=0, oldest_queued_age=5.0
    )
    assert decide(seen, big, state).desired == 8


def test_minimum_zero_scales_to_zero_and_back() -> None:
    settings = PolicySettings(target_wait=2.0, min_workers=0, max_workers=4, cooldown=5.0)
    run = simulate(
        [Tick() for _ in range(8)] + [Tick(queued=1, oldest=3.0)], start=1, settings=settings
    )
    assert desired(run)[5] == 0 and run[-1] == (1, "out")


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        PolicySettings(min_workers=5, max_workers=2)
    with pytest.raises(ValueError):
        PolicySettings(target_wait=0)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [((), 95, None), ((1.0,), 95, 1.0), (tuple(float(i) for i in range(1, 101)), 95, 95.0)],
)
def test_percentile(values: tuple[float, ...], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_retirees_are_never_busy() -> None:
    candidates = [
        Candidate("a", "busy"),
        Candidate("b", "idle"),
        Candidate("c", None),
        Candidate("d", "draining"),
        Candidate("e", "idle"),
    ]
    assert pick_retirees(candidates, 2) == ["c", "b"]
    assert pick_retirees(candidates, 10) == ["c", "b", "e"]
    assert pick_retirees(candidates, 0) == []


def seen(**fields: Any) -> Observation:
    values: dict[str, Any] = {"now": 0.0, "waits": (), "queued": 0, "running": 0, "workers": 1}
    return Observation(**{**values, **fields})


WATCHED = PolicyState(since=-100.0)  # the observer has watched for longer than a cooldown


def settings(**fields: Any) -> PolicySettings:
    values: dict[str, Any] = {"target_wait": 2.0, "min_workers": 1, "max_workers": 4}
    return PolicySettings(cooldown=60.0, **{**values, **fields})


REASONS = {
    "out, sized to the breach": (
        seen(waits=(28.73, 1.0), queued=12, running=2, workers=2),
        settings(target_wait=5, max_workers=16),
        WATCHED,
        (12, "out", "p95 wait 28.7 s over the 5 s target with 12 queued: 2 -> 12"),
    ),
    "out, up to the maximum": (
        seen(waits=(28.73,), queued=12, running=2, workers=2),
        settings(target_wait=5),
        WATCHED,
        (4, "out", "p95 wait 28.7 s over the 5 s target with 12 queued: 2 -> 4 (the maximum)"),
    ),
    "out, on the oldest queued job": (
        seen(waits=(1.0,), queued=39, running=1, oldest_queued_age=3.04),
        settings(),
        WATCHED,
        (2, "out", "oldest queued job waiting 3.0 s over the 2 s target with 39 queued: 1 -> 2"),
    ),
    "out, to the minimum from none": (
        seen(workers=0),
        settings(min_workers=2),
        WATCHED,
        (2, "out", "no workers, under the minimum 2: 0 -> 2"),
    ),
    "out, to the minimum from one": (
        seen(workers=1, running=1),
        settings(min_workers=2),
        WATCHED,
        (2, "out", "1 worker, under the minimum 2: 1 -> 2"),
    ),
    "out, a job and no worker": (
        seen(workers=0, queued=1, oldest_queued_age=0.5),
        settings(min_workers=0),
        WATCHED,
        (1, "out", "1 queued and no worker: 0 -> 1"),
    ),
    "in, to the minimum": (
        seen(workers=4),
        settings(),
        WATCHED,
        (
            1,
            "in",
            "4 workers idle, queue empty: down to the minimum 1, no more were needed for 60 s",
        ),
    ),
    "in, as far as the cooldown allows": (
        seen(workers=4, running=1),
        settings(),
        PolicyState(since=-100.0, recommendations=((-5.0, 2),)),
        (2, "in", "3 of 4 workers idle, queue empty: 4 -> 2, the most needed in the last 60 s"),
    ),
    "in, to the maximum": (
        seen(workers=6, running=5),
        settings(),
        WATCHED,
        (4, "in", "6 workers, over the maximum 4: down to 4"),
    ),
    "hold, at the maximum": (
        seen(queued=100, running=4, workers=4, oldest_queued_age=312.4),
        settings(),
        WATCHED,
        (
            4,
            "hold",
            "oldest queued job waiting 312 s over the 2 s target with 100 queued, "
            "but at the maximum 4: holding at 4",
        ),
    ),
    "hold, while workers start": (
        seen(queued=5, running=1, workers=2, starting=1, oldest_queued_age=3.0),
        settings(),
        WATCHED,
        (
            2,
            "hold",
            "oldest queued job waiting 3.0 s over the 2 s target with 5 queued, "
            "1 worker still starting: holding at 2",
        ),
    ),
    "hold, a breach but nothing queued": (
        seen(waits=(5.0,), running=1, workers=2),
        settings(),
        WATCHED,
        (2, "hold", "p95 wait 5.0 s over the 2 s target, but nothing is queued now: holding at 2"),
    ),
    "hold, a breach that idle workers take": (
        seen(waits=(5.0,), queued=1, running=2, workers=4, oldest_queued_age=5.0),
        settings(),
        PolicyState(since=-100.0, recommendations=((-5.0, 4),)),
        (
            4,
            "hold",
            "p95 wait 5.0 s over the 2 s target, but idle workers can take the 1 queued: "
            "holding at 4",
        ),
    ),
    "hold, within target": (
        seen(waits=(0.4, 0.6), queued=1, running=2, workers=2, oldest_queued_age=0.2),
        settings(),
        WATCHED,
        (2, "hold", "p95 wait 0.6 s within the 2 s target with 1 queued: holding at 2"),
    ),
    "hold, within the tolerance": (
        seen(waits=(2.14,), running=2, workers=2),
        settings(),
        WATCHED,
        (2, "hold", "p95 wait 2.1 s within 10% of the 2 s target, queue empty: holding at 2"),
    ),
    "hold, long jobs running": (
        seen(running=3, workers=3),
        settings(),
        WATCHED,
        (3, "hold", "3 jobs running, queue empty: holding at 3"),
    ),
    "hold, nothing at all": (
        seen(workers=0),
        settings(min_workers=0),
        WATCHED,
        (0, "hold", "no jobs running, queue empty: holding at 0"),
    ),
    "hold, at the minimum": (
        seen(workers=1),
        settings(),
        WATCHED,
        (1, "hold", "1 worker idle, queue empty: holding at the minimum 1"),
    ),
    "hold, in the first cooldown": (
        seen(workers=4),
        settings(),
        PolicyState(),
        (4, "hold", "4 workers idle, queue empty: holding at 4 for the first 60 s"),
    ),
    "hold, needed lately": (
        seen(workers=4),
        settings(),
        PolicyState(since=-100.0, recommendations=((-5.0, 4),)),
        (
            4,
            "hold",
            "4 workers idle, queue empty: holding at 4, as many were needed in the last 60 s",
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(REASONS))
def test_every_reason_reads_at_once(name: str) -> None:
    observation, policy, state, expected = REASONS[name]
    decision = decide(observation, policy, state)
    assert (decision.desired, decision.direction, decision.reason) == expected
