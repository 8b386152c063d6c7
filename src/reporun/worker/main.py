"""`reporun worker`: one worker process, built from the settings, until SIGTERM (drain: finish
the job up to the drain grace; a second SIGTERM or SIGINT stops it at once, and the job goes back
without using an attempt) or SIGUSR1 (retire after this job)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from reporun.config import Settings
from reporun.signals import Shutdown, shutdown_signals, signal_sets
from reporun.wiring import build_queue, check_schema, health_server, open_store, url_policy
from reporun.worker.egress import EgressPolicy
from reporun.worker.loop import Worker, WorkerConfig
from reporun.worker.sandbox import SandboxConfig, build_sandbox

logger = logging.getLogger("reporun.worker")


def sandbox_config(settings: Settings) -> SandboxConfig:
    uids = {
        name: value
        for name, value in (
            ("uid_base", settings.sandbox_uid_base),
            ("uid_count", settings.sandbox_uid_count),
        )
        if value is not None
    }
    return SandboxConfig(
        settings.sandbox,
        open_network=bool(settings.network_open),
        **uids,
    )


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        work_dir=settings.job_work_dir,
        mirrors_dir=settings.mirrors_dir,
        url_policy=url_policy(settings),
        worker_id=settings.worker_id,
        checkout_timeout=settings.checkout_timeout,
        drain_grace=settings.drain_grace,
        timeout_max=settings.timeout_max,
        egress=EgressPolicy.of(settings.egress_hosts, settings.egress_private_hosts),
        setup_cache_dir=settings.setup_cache_path,
        setup_cache_max=settings.setup_cache_max,
        runtimes=settings.catalog,
        runtimes_dir=settings.runtimes_dir,
        open_network=bool(settings.network_open),
        open_refused=tuple(settings.network_open_refused),
    )


async def _stop_when_orphaned(parent: int | None, shutdown: Shutdown) -> None:
    """A worker started by `serve` stops when `serve` is gone, even after a SIGKILL: at once,
    giving its job back, since nothing of the server may outlive it."""
    if parent is None:
        return
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    logger.warning("the serving process is gone; stopping", extra={"action": "orphaned"})
    shutdown.stop.set()
    shutdown.now.set()


async def run_worker(settings: Settings) -> None:
    store = open_store(settings)
    try:
        await check_schema(store)
        queue = build_queue(settings, store)
        worker = Worker(
            config=worker_config(settings),
            store=store,
            queue=queue,
            sandbox=build_sandbox(sandbox_config(settings)),
        )
        shutdown, retire = Shutdown(), asyncio.Event()
        probes = health_server(settings, "worker", store, queue)
        with shutdown_signals(shutdown), signal_sets(retire, signal.SIGUSR1):
            watch = asyncio.create_task(
                _stop_when_orphaned(settings.parent_pid, shutdown), name="orphan-watch"
            )
            try:
                async with probes or contextlib.nullcontext():
                    await worker.run(shutdown.stop, retire, now=shutdown.now)
            finally:
                watch.cancel()
                await queue.close()  # leaves a Kafka group at once, whatever ended the run
    finally:
        await store.close()
