"""How `reporun serve` starts and stops: its port is taken before anything else happens (a
second serve on a busy port starts and writes nothing), and a stop comes in two steps. The
first SIGINT or SIGTERM lets running jobs finish up to the drain grace, and says so; a second
one stops them at once. Either way every worker, sandbox and job process is gone when the
command exits, and a job the shutdown interrupted goes back to the queue without using an
attempt (the operator stopped it; nothing failed)."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import sys
import uuid
from collections.abc import Sequence

from reporun.errors import ConfigError
from reporun.jobs import Job
from reporun.observer.scalers import LocalScaler
from reporun.signals import Shutdown
from reporun.store import Store

logger = logging.getLogger("reporun.serve")

BACKLOG = 2048  # uvicorn's
NAMED = 3  # jobs named in the waiting line; past that, their count
GIVEN_BACK = "reporun serve stopped before the job ended"


def bind_port(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, to hand to the server; ConfigError (one line) when the
    port is taken or the address is not one of this host's."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror}") from exc
    family, kind, proto, _, address = found[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)  # listening at once: another bind of this port now fails
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} is in use: another reporun serve? "
                "(stop it, or choose another with --port)"
            ) from exc
        raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def _again(first: signal.Signals | None) -> str:
    return "send SIGTERM again" if first is signal.SIGTERM else "Ctrl-C again"


def _jobs(ids: Sequence[uuid.UUID]) -> str:
    if len(ids) == 1:
        return f"job {ids[0]}"
    if len(ids) <= NAMED:
        return "jobs " + ", ".join(str(i) for i in ids)
    return f"{len(ids)} running jobs"


def waiting_line(jobs: Sequence[Job], grace: float, first: signal.Signals | None) -> str:
    """What the operator reads after the first signal while jobs run."""
    return (
        f"waiting up to {grace:g} s for {_jobs([j.id for j in jobs])} to finish "
        f"({_again(first)} to stop now)"
    )


def stopping_line(jobs: Sequence[Job]) -> str:
    """What the operator reads after the second signal."""
    if not jobs:
        return "stopping now"
    goes = "goes" if len(jobs) == 1 else "go"
    return f"stopping now: {_jobs([j.id for j in jobs])} {goes} back to the queue"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _held(store: Store, worker_ids: Sequence[str]) -> list[Job]:
    try:
        return await store.runs.held_by(worker_ids)
    except Exception:  # a line less to read; the shutdown goes on
        logger.warning("cannot list the running jobs", exc_info=True, extra={"action": "stop"})
        return []


async def stop_pool(
    shutdown: Shutdown,
    scaler: LocalScaler,
    store: Store,
    *,
    grace: float,
    observing: asyncio.Task[None],
    stop_observing: asyncio.Event,
) -> None:
    """Once `shutdown.stop` is set: stop the observer (no worker is started any more), drain
    the workers (cut short by `shutdown.now`), then give back what the workers still held."""
    await shutdown.stop.wait()
    stop_observing.set()
    if running := await _held(store, scaler.worker_ids):
        _say(waiting_line(running, grace, shutdown.first))

    async def hurry() -> None:
        await shutdown.now.wait()
        _say(stopping_line(await _held(store, scaler.worker_ids)))
        scaler.stop_now()

    hurrying = asyncio.create_task(hurry(), name="stop-now")
    try:
        await asyncio.gather(observing, return_exceptions=True)
        await scaler.close()
    finally:
        hurrying.cancel()
        await asyncio.gather(hurrying, return_exceptions=True)
    # Workers that were killed could not give their jobs back: do it for them, without an
    # attempt, so that the next start's reaper does not count them as lost.
    released = await store.runs.release_workers(scaler.stopped_ids, GIVEN_BACK)
    if released:
        logger.info(
            "gave back the jobs of stopped workers",
            extra={"action": "release", "jobs": [str(j.id) for j in released]},
        )
