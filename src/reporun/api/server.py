"""Serving the API: its parts built from the settings (config, authenticator, submissions), and
uvicorn run under reporun's own signal handling. Nothing here imports a worker, a sandbox or
the observer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence

import uvicorn

from reporun.api.app import create_app
from reporun.api.auth import Authenticator, LocalAuth
from reporun.api.deps import ApiConfig, Services
from reporun.config import Settings
from reporun.errors import ConfigError
from reporun.signals import stop_signals
from reporun.store import Quota, Store
from reporun.submit import Submissions, SubmitConfig
from reporun.web import WebConfig
from reporun.wiring import build_queue, job_rules


def api_config(settings: Settings) -> ApiConfig:
    return ApiConfig(
        max_body_bytes=settings.max_body_bytes,
        metrics_public=settings.metrics_public,
        worker_alive=settings.lease_seconds,
    )


def submit_config(settings: Settings) -> SubmitConfig:
    return SubmitConfig(
        rules=job_rules(settings),
        quota=Quota(settings.quota_pending, settings.quota_per_minute),
        admin_quota=Quota(settings.admin_quota_pending, settings.admin_quota_per_minute),
    )


def web_config(settings: Settings) -> WebConfig:
    return WebConfig(
        public_url=settings.public_url.rstrip("/") if settings.public_url else None,
        session_ttl=settings.session_ttl,
    )


def build_services(settings: Settings, store: Store, auth: Authenticator) -> Services:
    queue = build_queue(settings, store)
    web_oidc = None
    if settings.auth == "oidc":
        from reporun.api.oidc import OidcAuth
        from reporun.web.oidcflow import OidcSignin

        if not isinstance(auth, OidcAuth):
            raise ConfigError("REPORUN_AUTH=oidc needs the OIDC authenticator")

        secret = settings.oidc_web_secret
        web_oidc = OidcSignin(
            auth,
            client_id=settings.oidc_web_client,
            client_secret=secret.get_secret_value() if secret else None,
        )
    return Services(
        api_config(settings),
        store,
        queue,
        auth,
        Submissions(submit_config(settings), queue),
        web_config(settings),
        web_oidc,
    )


def build_auth(settings: Settings, store: Store, *, key: str | None = None) -> Authenticator:
    """OIDC, or local tokens signed with `key` (default REPORUN_SECRET_KEY) and looked up in
    the store's token records."""
    if settings.auth == "oidc":
        from reporun.api.oidc import OidcAuth

        return OidcAuth(
            issuer=settings.required_issuer(),
            audience=settings.oidc_audience,
            discovery_url=settings.oidc_discovery_url,
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
    return LocalAuth(key, store.tokens)


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
    stop: asyncio.Event | None = None,
    sockets: Sequence[socket.socket] | None = None,
) -> None:
    """Serve the API until SIGTERM or SIGINT, or until `stop` when the caller handles the
    signals; on `sockets` already listening, or else on the settings' host and port. Open
    connections get up to 5 s to end."""
    app = create_app(build_services(settings, store, auth))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    signals: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if stop is None:
        stop = asyncio.Event()
        signals = stop_signals(stop)

    async def serve() -> bool:
        try:
            await server.serve(sockets=list(sockets) if sockets is not None else None)
        except SystemExit:  # uvicorn's way of saying it could not start
            return False
        return True

    relaying: asyncio.Task[None] | None = None
    if settings.queue == "kafka":
        from reporun.queue.relay import Relay
        from reporun.wiring import kafka_config

        relaying = asyncio.create_task(
            Relay(store, kafka_config(settings)).run(stop), name="outbox-relay"
        )
    with signals:
        serving = asyncio.create_task(serve())
        stopping = asyncio.create_task(stop.wait())
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        if server.started and on_started is not None:
            await on_started()
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        stopping.cancel()
        if relaying is not None:
            relaying.cancel()
            await asyncio.gather(relaying, return_exceptions=True)
        close = getattr(auth, "close", None)
        if close is not None:
            await close()
        if not await serving:
            raise ConfigError(
                f"cannot serve on {settings.host}:{settings.port} (in use, or not an address here)"
            )
