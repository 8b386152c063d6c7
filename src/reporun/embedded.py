"""`reporun serve`: the API, a pool of worker processes and local tokens, in one command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import sys
from pathlib import Path

from reporun.api.auth import LocalAuth, ensure_admin_token, load_or_create_key
from reporun.api.server import run_api
from reporun.config import Settings
from reporun.lifecycle import bind_port, stop_pool
from reporun.observer.main import build_observer
from reporun.observer.scalers import LocalScaler
from reporun.paths import forget_server, record_server
from reporun.signals import Shutdown, shutdown_signals
from reporun.store.migrate import upgrade
from reporun.web.signin import CODE_TTL
from reporun.wiring import open_store
from reporun.worker.main import sandbox_config
from reporun.worker.sandbox import build_sandbox
from reporun.worker.workdir import prepare_work_dir

logger = logging.getLogger("reporun.serve")

# Ctrl-C on a laptop should not wait ten minutes for a job: running jobs go back to the queue.
SERVE_DRAIN_GRACE = 10.0
# Workers on the same host as their SQLite file: an idle poll is a cheap local read.
SERVE_POLL_INTERVAL = 0.05
LOCAL_SCHEMES = ("https", "http", "git", "ssh")


def embedded_settings(settings: Settings) -> Settings:
    """Single user on loopback: local repositories and loopback hosts are fine."""
    update: dict[str, object] = {
        "data_dir": settings.data_dir.resolve(),
        "allow_local_repos": True,
        "allowed_schemes": sorted(set(settings.allowed_schemes) | set(LOCAL_SCHEMES)),
    }
    if "drain_grace" not in settings.model_fields_set:
        update["drain_grace"] = SERVE_DRAIN_GRACE
    if "poll_interval" not in settings.model_fields_set:
        update["poll_interval"] = SERVE_POLL_INTERVAL
    return settings.model_copy(update=update)


def _worker_env(settings: Settings) -> dict[str, str]:
    return {
        "REPORUN_DATA_DIR": str(settings.data_dir),
        "REPORUN_DATABASE_URL": settings.db_url,
        "REPORUN_ALLOW_LOCAL_REPOS": "true",
        "REPORUN_ALLOWED_SCHEMES": ",".join(settings.allowed_schemes),
        "REPORUN_SANDBOX": settings.sandbox,
        "REPORUN_DRAIN_GRACE": str(settings.drain_grace),
        "REPORUN_POLL_INTERVAL": str(settings.poll_interval),
        "REPORUN_LOG_FORMAT": settings.log_format,
        "REPORUN_PARENT_PID": str(os.getpid()),
    }


def _cli_name() -> str:
    """How to call the CLI from another terminal: `reporun` when that is on PATH (the same one),
    else the absolute path of this environment's own."""
    exe = shutil.which("reporun")
    own = Path(sys.executable).parent / "reporun"
    if exe and (not own.exists() or Path(exe).resolve() == own.resolve()):
        return "reporun"
    return str(own) if own.exists() else f"{sys.executable} -m reporun"


async def serve(settings: Settings) -> None:
    settings = embedded_settings(settings)
    settings.check_secure(embedded=True)
    # The port first: a second serve on a busy one must start nothing and write nothing.
    listener = bind_port(settings.host, settings.port)
    with contextlib.closing(listener):
        settings = settings.model_copy(update={"port": listener.getsockname()[1]})
        await _serve(settings, listener)


async def _serve(settings: Settings, listener: socket.socket) -> None:
    build_sandbox(sandbox_config(settings))  # refuse to start without one, with the reason
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    prepare_work_dir(settings.job_work_dir)
    store = open_store(settings)
    await upgrade(store.engine)
    auth = LocalAuth(load_or_create_key(settings.secret_key_path), store.tokens)
    token_path = settings.admin_token_path
    await ensure_admin_token(auth, token_path)
    scaler = LocalScaler(_worker_env(settings), drain_grace=settings.drain_grace)
    observer = build_observer(settings, store, scaler)
    low, high = settings.pool_bounds
    pool = f"{low} worker(s)" if low == high else f"{low} to {high} workers (scaled on queue wait)"

    served: list[Path] = []

    async def banner() -> None:
        # Listening now: client commands on this machine find the token from any directory.
        if settings.port:
            try:
                served.append(record_server(settings.host, settings.port, settings.data_dir))
            except OSError as exc:
                logger.warning(
                    "cannot record this server for the CLI: %s", exc, extra={"action": "record"}
                )
        cli = _cli_name()
        url = f"http://{settings.host}:{settings.port}"
        here = Path.cwd()
        first = (
            f"  {cli} submit . --command 'ls -la' --follow    # this repository, at its HEAD\n"
            if (here / ".git").exists()
            else ""
        )
        on_path = (
            ""
            if cli == "reporun" or Path(cli).name != "reporun"
            else f"(`reporun` is not on PATH: `source {Path(cli).parent}/activate` puts it there)\n"
        )
        code = await store.sessions.new_code("admin", frozenset({"admin"}), ttl=CODE_TTL)
        print(
            f"reporun is serving on {url} with {pool} (API docs: {url}/docs)\n"
            f"dashboard: {url}/signin?code={code}\n"
            f"  (a sign-in link that works once; `{cli} dashboard` prints a new one)\n"
            f"admin token: {token_path} (mode 0600; the CLI on this machine finds it)\n"
            f"a first job, from another terminal:\n"
            f"{first}"
            f"  {cli} submit https://github.com/you/project.git --wait\n"
            f"{on_path}"
            f"or with curl:\n"
            f'  curl -H "Authorization: Bearer $(cat {token_path})" '
            f'"{url}/add?url=https://github.com/you/project.git"',
            flush=True,
        )

    shutdown = Shutdown()
    stop_observing = asyncio.Event()
    with shutdown_signals(shutdown):
        try:
            await observer.tick()  # the minimum pool starts before the API answers
            observing = asyncio.create_task(observer.run(stop_observing), name="observer")
            stopping = asyncio.create_task(
                stop_pool(
                    shutdown,
                    scaler,
                    store,
                    grace=settings.drain_grace,
                    observing=observing,
                    stop_observing=stop_observing,
                ),
                name="stop-pool",
            )
            try:
                if not shutdown.stop.is_set():
                    await run_api(
                        settings,
                        store,
                        auth,
                        on_started=banner,
                        stop=shutdown.stop,
                        sockets=[listener],
                    )
            finally:
                for path in served:
                    forget_server(path)
                if not shutdown.stop.is_set():
                    shutdown.request()  # the API ended on its own (it could not start)
                await stopping
        finally:
            await scaler.close()  # nothing left to stop unless the start failed half-way
            await observer.queue.close()
            await store.close()
