"""The scaling policy, table-driven: each case is a run of observations one second apart, with
the pool following the policy's decisions, and the worker counts the policy must ask for."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
