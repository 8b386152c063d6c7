"""Commands that run reporun's parts: serve, api, worker, observer, db, doctor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reporun.cli.base import _setup_logs, app, db_app, load_settings, local_settings, run

# The parts --------------------------------------------------------------------------------------
Host = Annotated[str | None, typer.Option(help="Address to listen on.")]
Port = Annotated[int | None, typer.Option(help="Port to listen on.")]


MinWorkers = Annotated[
    int | None, typer.Option(min=0, max=1024, help="Fewest workers the observer keeps.")
]
MaxWorkers = Annotated[
    int | None, typer.Option(min=0, max=1024, help="Most workers the observer starts.")
]


@app.command()
def serve(
    host: Host = None,
    port: Port = None,
    data_dir: Annotated[Path | None, typer.Option(help="Database, tokens and mirrors.")] = None,
    workers: Annotated[
        int | None, typer.Option(min=0, max=64, help="Worker processes (a fixed pool).")
    ] = None,
    min_workers: MinWorkers = None,
    max_workers: MaxWorkers = None,
) -> None:
    """The embedded service: API, workers and local tokens in one process tree (SQLite)."""
    from reporun.embedded import serve as serve_embedded

    settings = load_settings(
        host=host,
        port=port,
        data_dir=data_dir,
        workers=workers,
        min_workers=min_workers,
        max_workers=max_workers,
    )
    _setup_logs(settings)
    run(serve_embedded(settings))


@app.command()
def api(host: Host = None, port: Port = None) -> None:
    """The API alone (cluster mode)."""
    from reporun.api.server import build_auth, run_api
    from reporun.store import Store
    from reporun.wiring import check_schema

    settings = load_settings(host=host, port=port)
    _setup_logs(settings)

    async def main() -> None:
        settings.check_secure(embedded=False)
        store = Store.open(settings.db_url)
        try:
            await check_schema(store)
            await run_api(settings, store, build_auth(settings, store))
        finally:
            await store.close()

    run(main())


@app.command()
def worker() -> None:
    """One worker: claims and runs jobs until SIGTERM, then drains."""
    from reporun.worker.main import run_worker

    settings = load_settings()
    _setup_logs(settings)
    run(run_worker(settings))


@app.command()
def observer(min_workers: MinWorkers = None, max_workers: MaxWorkers = None) -> None:
    """Scale the workers on queue wait (REPORUN_SCALER=local processes or docker containers)."""
    from reporun.observer.main import run_observer

    settings = load_settings(min_workers=min_workers, max_workers=max_workers)
    _setup_logs(settings)
    run(run_observer(settings))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to the newest schema."""
    from reporun.store import Store
    from reporun.store.migrate import upgrade

    settings = load_settings()

    async def migrate() -> None:
        store = Store.open(settings.db_url)
        try:
            await upgrade(store.engine)
        finally:
            await store.close()

    run(migrate())
    print("database is at the newest schema")


@app.command()
def doctor() -> None:
    """Tell whether this host can run jobs safely, and why not."""
    from reporun.doctor import diagnose

    settings = local_settings()
    ok = run(diagnose(settings))
    raise SystemExit(0 if ok else 1)
