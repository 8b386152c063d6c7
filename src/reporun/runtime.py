"""Wiring: build the parts a command needs from the one Settings object, and run the worker
and the observer. (The API's lives in api/server.py, so a worker never imports the web stack.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator, Mapping

from reporun.config import Settings
from reporun.errors import ConfigError
from reporun.observer.loop import Observer
from reporun.observer.policy import PolicySettings
from reporun.observer.scalers import LocalScaler, Scaler
from reporun.queue import QueueBackend, QueueConfig
from reporun.queue.sql import SqlQueue
from reporun.store import Store
from reporun.store.migrate import is_current
from reporun.worker.loop import Worker
from reporun.worker.sandbox import Bubblewrap, Sandbox, Unsandboxed
from reporun.worker.uids import UidPool

logger = logging.getLogger("reporun")


def build_queue(settings: Settings, store: Store) -> QueueBackend:
    if settings.queue == "kafka":
        raise ConfigError("REPORUN_QUEUE=kafka is not available in this version; use sql")
    config = QueueConfig(
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        poll_interval=settings.poll_interval,
        notify=settings.notify,
    )
    return SqlQueue(store, config)


def build_sandbox(settings: Settings) -> Sandbox:
    if settings.sandbox == "none":
        logger.warning(
            "REPORUN_SANDBOX=none: jobs run unconfined as this user; trusted code only",
            extra={"action": "sandbox_off"},
        )
        return Unsandboxed()
    problems = Bubblewrap.problems()
    if problems:
        raise ConfigError("; ".join(problems))
    return Bubblewrap(UidPool(settings.sandbox_uid_base, settings.sandbox_uid_count))


async def _stop_when_orphaned(parent: int | None, stop: asyncio.Event) -> None:
    """A worker started by `serve` drains when `serve` is gone, even after a SIGKILL."""
    if parent is None:
        return
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    logger.warning("the serving process is gone; draining", extra={"action": "orphaned"})
    stop.set()


def build_scaler(settings: Settings, env: Mapping[str, str]) -> Scaler:
    if settings.scaler == "docker":
        from reporun.observer.docker import DockerScaler

        return DockerScaler(
            project=settings.docker_project,
            service=settings.docker_service,
            docker_host=settings.docker_host,
            security_opt=settings.docker_security_opt,
        )
    return LocalScaler(env, drain_grace=settings.drain_grace)


def build_observer(settings: Settings, store: Store, scaler: Scaler) -> Observer:
    low, high = settings.pool_bounds
    policy = PolicySettings(
        target_wait=settings.target_wait,
        min_workers=low,
        max_workers=high,
        cooldown=settings.scale_in_cooldown,
    )
    return Observer(
        store=store,
        queue=build_queue(settings, store),
        scaler=scaler,
        policy=policy,
        interval=settings.observe_interval,
        window=settings.observe_window,
    )


async def run_observer(settings: Settings) -> None:
    """`reporun observer`: scale the workers until SIGTERM; local workers are drained then,
    containers are left running (the next observer takes them over)."""
    store = Store.open(settings.db_url)
    try:
        await check_schema(store)
        scaler = build_scaler(settings, {"REPORUN_PARENT_PID": str(os.getpid())})
        observer = build_observer(settings, store, scaler)
        stop = asyncio.Event()
        try:
            with stop_signals(stop):
                await observer.run(stop)
        finally:
            await scaler.close()
            await observer.queue.close()
    finally:
        await store.close()


async def check_schema(store: Store) -> None:
    if not await is_current(store.engine):
        raise ConfigError("the database schema is not current: run `reporun db upgrade`")


def stop_signals(stop: asyncio.Event) -> contextlib.AbstractContextManager[None]:
    """SIGTERM and SIGINT set `stop`."""
    return signal_sets(stop, signal.SIGTERM, signal.SIGINT)


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


async def run_worker(settings: Settings) -> None:
    store = Store.open(settings.db_url)
    try:
        await check_schema(store)
        queue = build_queue(settings, store)
        worker = Worker(
            settings=settings, store=store, queue=queue, sandbox=build_sandbox(settings)
        )
        stop, retire = asyncio.Event(), asyncio.Event()
        with stop_signals(stop), signal_sets(retire, signal.SIGUSR1):
            watch = asyncio.create_task(_stop_when_orphaned(settings.parent_pid, stop))
            try:
                await worker.run(stop, retire)
            finally:
                watch.cancel()
        await queue.close()
    finally:
        await store.close()
