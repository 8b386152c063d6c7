"""`reporun observer`, and the observer `reporun serve` runs: built from the settings."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping

from reporun.config import Settings
from reporun.observer.loop import Observer
from reporun.observer.policy import PolicySettings
from reporun.observer.scalers import AdvisoryScaler, LocalScaler, Scaler
from reporun.signals import stop_signals
from reporun.store import Store
from reporun.wiring import build_queue, check_schema, health_server, kafka_config, open_store


def policy_settings(settings: Settings) -> PolicySettings:
    low, high = settings.pool_bounds
    return PolicySettings(
        target_wait=settings.target_wait,
        min_workers=low,
        max_workers=high,
        cooldown=settings.scale_in_cooldown,
    )


def build_scaler(settings: Settings, env: Mapping[str, str], store: Store) -> Scaler:
    """The scaler the settings ask for; local workers get `env` (what `reporun worker` reads)."""
    if settings.scaler == "none":
        return AdvisoryScaler(store, alive_within=settings.lease_seconds)
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
    results = None
    if settings.queue == "kafka":
        from reporun.observer.results import ResultsFeed

        results = ResultsFeed(kafka_config(settings))
    return Observer(
        store=store,
        queue=build_queue(settings, store),
        scaler=scaler,
        policy=policy_settings(settings),
        interval=settings.observe_interval,
        window=settings.observe_window,
        results=results,
    )


async def run_observer(settings: Settings) -> None:
    """Scale the workers until SIGTERM; local workers are drained then, containers are left
    running (the next observer takes them over)."""
    store = open_store(settings)
    try:
        await check_schema(store)
        scaler = build_scaler(settings, {"REPORUN_PARENT_PID": str(os.getpid())}, store)
        observer = build_observer(settings, store, scaler)
        stop = asyncio.Event()
        probes = health_server(settings, "observer", store, observer.queue)
        try:
            with stop_signals(stop):
                async with probes or contextlib.nullcontext():
                    await observer.run(stop)
        finally:
            await scaler.close()
            await observer.queue.close()
    finally:
        await store.close()
