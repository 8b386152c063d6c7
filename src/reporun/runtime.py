"""Wiring: build the parts a command needs from the one Settings object, and run them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterator

import uvicorn

from reporun.api.app import create_app
from reporun.api.auth import Authenticator, LocalAuth
from reporun.api.deps import Services
from reporun.config import Settings
from reporun.errors import ConfigError
from reporun.queue import QueueBackend
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
    return SqlQueue(
        store,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        poll_interval=settings.poll_interval,
        listen=settings.notify,
    )


def build_auth(settings: Settings, *, key: str | None = None) -> Authenticator:
    if settings.auth == "oidc":
        from reporun.api.oidc import OidcAuth

        if not settings.oidc_issuer:
            raise ConfigError("REPORUN_AUTH=oidc needs REPORUN_OIDC_ISSUER")
        return OidcAuth(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            azp=settings.oidc_azp,
            roles_claim=settings.oidc_roles_claim,
            algorithms=settings.oidc_algorithms,
            leeway=settings.oidc_leeway,
            refresh_interval=settings.oidc_jwks_refresh,
        )
    if key is None:
        if settings.secret_key is None:
            raise ConfigError("REPORUN_SECRET_KEY is required for local tokens")
        key = settings.secret_key.get_secret_value()
    return LocalAuth(key)


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


async def check_schema(store: Store) -> None:
    if not await is_current(store.engine):
        raise ConfigError("the database schema is not current: run `reporun db upgrade`")


@contextlib.contextmanager
def stop_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop`; the previous handlers come back on exit."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
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
        stop = asyncio.Event()
        with stop_signals(stop):
            watch = asyncio.create_task(_stop_when_orphaned(settings.parent_pid, stop))
            try:
                await worker.run(stop)
            finally:
                watch.cancel()
        await queue.close()
    finally:
        await store.close()


class _Server(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM after shutting down, which would kill `serve` before
    it drains its workers: reporun handles the signals itself (`stop_signals`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_api(
    settings: Settings,
    store: Store,
    auth: Authenticator,
    *,
    on_started: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve the API until SIGTERM or SIGINT."""
    queue = build_queue(settings, store)
    app = create_app(Services(settings, store, queue, auth))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    stop = asyncio.Event()

    async def serve() -> bool:
        try:
            await server.serve()
        except SystemExit:  # uvicorn's way of saying it could not start
            return False
        return True

    with stop_signals(stop):
        serving = asyncio.create_task(serve())
        stopping = asyncio.create_task(stop.wait())
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        if server.started and on_started is not None:
            await on_started()
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        stopping.cancel()
        close = getattr(auth, "close", None)
        if close is not None:
            await close()
        if not await serving:
            raise ConfigError(
                f"cannot serve on {settings.host}:{settings.port} (in use, or not an address here)"
            )
