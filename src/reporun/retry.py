"""Capped, jittered exponential backoff, the one function every retry uses."""

from __future__ import annotations

import random


def compute_backoff(attempt: int, *, base: float = 0.1, cap: float = 10.0) -> float:
    """Seconds to wait before retry number `attempt` (0-based): full jitter, capped."""
    return random.uniform(0, min(cap, base * (2 ** min(attempt, 30))))
