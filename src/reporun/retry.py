"""Capped, jittered exponential backoff, the one function every retry uses, and a retry loop
with a deadline that says when it gives up."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

T = TypeVar("T")


def compute_backoff(attempt: int, *, base: float = 0.1, cap: float = 10.0) -> float:
    """Seconds to wait before retry number `attempt` (0-based): full jitter, capped."""
    return random.uniform(0, min(cap, base * (2 ** min(attempt, 30))))


def worth_logging(failures: int) -> bool:
    """Whether the `failures`-th failure in a row of a loop that retries for ever is logged:
    the first, the tenth, then every hundredth (an outage is told, not repeated each try)."""
    return failures in (1, 10) or failures % 100 == 0


async def retry_until(
    action: Callable[[], Awaitable[T]],
    *,
    deadline: float,
    what: str,
    log: logging.Logger,
    extra: Mapping[str, object],
    cap: float = 5.0,
) -> tuple[bool, T | None]:
    """Call `action` until it succeeds or `deadline` seconds have passed (a try that hangs is cut
    off then too), backing off between tries. The first failure is logged with its traceback,
    giving up once more, with what was being tried; (False, None) then, else (True, its
    result)."""
    give_up_at = time.monotonic() + deadline
    attempt = 0
    while True:
        try:
            async with asyncio.timeout(max(0.0, give_up_at - time.monotonic())):
                return True, await action()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if attempt == 0:
                log.warning(f"{what} failed; retrying", exc_info=True, extra=dict(extra))
            pause = compute_backoff(attempt, cap=cap)
            if time.monotonic() + pause > give_up_at:
                log.error(
                    f"{what} failed for {deadline:g} s; giving up",
                    extra={**extra, "error": f"{type(exc).__name__}: {exc}"[:300]},
                )
                return False, None
            attempt += 1
            await asyncio.sleep(pause)
