"""Process signals for the long-running commands, installed in a context manager that puts the
previous handlers back (never in a constructor)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field


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


@dataclass
class Shutdown:
    """A stop in two steps: the first SIGTERM or SIGINT sets `stop` (finish what runs, up to a
    grace), a second one sets `now` (stop at once). `first` is the signal that asked."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    now: asyncio.Event = field(default_factory=asyncio.Event)
    first: signal.Signals | None = None

    def request(self, sig: signal.Signals | None = None) -> None:
        if self.stop.is_set():
            self.now.set()
            return
        self.first = sig
        self.stop.set()


@contextlib.contextmanager
def shutdown_signals(shutdown: Shutdown) -> Iterator[Shutdown]:
    """SIGTERM and SIGINT step `shutdown`; the previous handlers come back on exit."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        loop.add_signal_handler(sig, shutdown.request, sig)
    try:
        yield shutdown
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous[sig])
