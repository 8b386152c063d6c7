"""The retry loop gives up at its deadline and says so once; racing awaits what it cancels."""

from __future__ import annotations

import asyncio
import logging

import pytest

from reporun.retry import retry_until
from reporun.tasks import unless, wait_any


async def test_retry_until_returns_the_first_success() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise OSError("down")
        return "done"

    log = logging.getLogger("test.retry")
    assert await retry_until(flaky, deadline=30, what="x", log=log, extra={}, cap=0.01) == (
        True,
        "done",
    )
    assert calls == 3


async def test_retry_until_gives_up_at_the_deadline_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def down() -> None:
        raise OSError("the database is down")

    log = logging.getLogger("test.retry")
    with caplog.at_level(logging.WARNING, logger="test.retry"):
        started = asyncio.get_running_loop().time()
        result = await retry_until(
            down, deadline=0.3, what="report", log=log, extra={"job_id": "j1"}, cap=0.05
        )
    assert result == (False, None)
    assert asyncio.get_running_loop().time() - started < 1
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "report failed; retrying"
    assert messages[-1] == "report failed for 0.3 s; giving up"
    assert len([m for m in messages if "retrying" in m]) == 1
    assert caplog.records[-1].job_id == "j1"  # type: ignore[attr-defined]


async def test_wait_any_cancels_and_awaits_the_losers() -> None:
    ended: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            ended.append("slow")

    await wait_any(slow(), asyncio.sleep(0.01))
    assert ended == ["slow"]  # cancelled and finished before wait_any returned


async def test_unless_cancels_the_work_once_stopped() -> None:
    stop = asyncio.Event()
    ended: list[str] = []

    async def work() -> int:
        try:
            await asyncio.sleep(60)
        finally:
            ended.append("work")
        return 1

    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await unless(stop, work()) is None
    assert ended == ["work"]
    assert await unless(asyncio.Event(), asyncio.sleep(0, result=7)) == 7
