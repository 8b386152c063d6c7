"""Commands that run reporun's parts: serve, api, worker, observer, db, doctor."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from reporun.cli.base import _setup_logs, app, db_app, fail, load_settings, local_settings, run
from reporun.errors import ConfigError

if TYPE_CHECKING:
    from reporun.config import Settings

# The parts --------------------------------------------------------------------------------------
# Shown defaults are the Settings' own (tests/unit/test_cli_help.py holds them to it); an option
# left out takes its REPORUN_* variable, else that default.
Host = Annotated[
    str | None,
    typer.Option(metavar="ADDRESS", help="Address to listen on.", show_default="127.0.0.1"),
]
Port = Annotated[
    int | None, typer.Option(metavar="PORT", help="Port to listen on.", show_default="8000")
]


MinWorkers = Annotated[
    int | None,
    typer.Option(
        min=0,
        max=1024,
        metavar="N",
        help="Fewest workers the observer keeps.",
        show_default="the --workers count",
    ),
]
MaxWorkers = Annotated[
    int | None,
    typer.Option(
        min=0,
        max=1024,
        metavar="N",
        help="Most workers the observer starts.",
        show_default="the --workers count",
    ),
]


@app.command()
def serve(
    host: Host = None,
    port: Port = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Database, tokens and mirrors ($XDG_DATA_HOME/reporun if set).",
            show_default="~/.local/share/reporun",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0, max=64, metavar="N", help="Worker processes (a fixed pool).", show_default="2"
        ),
    ] = None,
    min_workers: MinWorkers = None,
    max_workers: MaxWorkers = None,
) -> None:
    """Run the embedded service (SQLite).

    The API, its workers and local tokens in one process tree; --min-workers and
    --max-workers let the observer scale the pool.
    """
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


def _refused(settings: Settings, *, serving: bool = False) -> Settings:
    """What a cluster part can refuse from its settings alone, said before it imports the
    rest of itself (a second of imports for a one-line answer)."""
    try:
        if serving:
            settings.check_secure(embedded=False)
        if settings.queue == "kafka":
            settings.required_bootstrap()
    except ConfigError as exc:
        fail(exc.message)
    return settings


@app.command()
def api(host: Host = None, port: Port = None) -> None:
    """Run the API alone (cluster mode)."""
    settings = _refused(load_settings(host=host, port=port), serving=True)
    from reporun.api.server import build_auth, run_api
    from reporun.wiring import check_schema, open_store

    _setup_logs(settings)

    async def main() -> None:
        store = open_store(settings)
        try:
            await check_schema(store)
            await run_api(settings, store, build_auth(settings, store))
        finally:
            await store.close()

    run(main())


@app.command()
def worker() -> None:
    """Run one worker (cluster mode).

    It claims and runs jobs until SIGTERM, then drains.
    """
    settings = _refused(load_settings())
    from reporun.worker.main import run_worker

    _setup_logs(settings)
    run(run_worker(settings))


@app.command()
def observer(min_workers: MinWorkers = None, max_workers: MaxWorkers = None) -> None:
    """Scale the workers on queue wait.

    REPORUN_SCALER picks what it scales: local processes or docker containers.
    """
    settings = _refused(load_settings(min_workers=min_workers, max_workers=max_workers))
    from reporun.observer.main import run_observer

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
    """Check that this host can run jobs safely.

    Says what is missing when it cannot.
    """
    from reporun.doctor import diagnose

    settings = local_settings()
    ok = run(diagnose(settings))
    raise SystemExit(0 if ok else 1)
