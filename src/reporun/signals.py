"""Process signals for the long-running commands, installed in a context manager that puts the
previous handlers back (never in a constructor)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator


@contextlib.contextmanager
def signal_sets(event: asyncio.Event, *signals: signal.Signals) -> Iterator[None]:
    """These signals set `event`; the previous handlers come back on exit."""
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        loop.add_signal_handler(sig, event.set)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous[sig])


def stop_signals(stop: asyncio.Event) -> contextlib.AbstractContextManager[None]:
    """SIGTERM and SIGINT set `stop`."""
    return signal_sets(stop, signal.SIGTERM, signal.SIGINT)
