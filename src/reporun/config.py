"""The one Settings object, read once at start (never at import) and passed down."""

from __future__ import annotations

import hashlib
import tempfile
from ipaddress import IPv4Network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from reporun.errors import ConfigError
from reporun.jobs import DEFAULT_EGRESS_HOSTS, GiB, KiB, MiB
from reporun.paths import (
    ADMIN_TOKEN_FILE,
    DATABASE_FILE,
    SECRET_KEY_FILE,
    default_data_dir,
    is_loopback_host,
)
from reporun.runtimes import Catalog, parse_runtimes

# Secrets that ship in examples; a server refuses to start with them.
KNOWN_WEAK_SECRETS = frozenset({"", "changeme", "secret", "postgres", "reporun", "admin"})


def _csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REPORUN_", extra="ignore")

    # Where the embedded service keeps its database, tokens, mirrors and workspaces (default:
    # the per-user data dir, see reporun.paths).
    data_dir: Path = Field(default_factory=default_data_dir)
    # Where checkouts wait for their sandbox; must be reachable by the jobs' uids.
    work_dir: Path | None = None
    database_url: str | None = None
    queue: Literal["sql", "kafka"] = "sql"
    # Kafka mode (on PostgreSQL): the seed's topics and the workers' consumer group.
    kafka_bootstrap: str | None = Field(
        None, validation_alias=AliasChoices("REPORUN_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP")
    )
    kafka_jobs_topic: str = Field("jobs", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    kafka_results_topic: str = Field("results", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    kafka_group: str = Field("workers", min_length=1)
    kafka_observer_group: str = Field("observer", min_length=1)
    # Partitions of a topic created at start (default: twice the most workers, at least 2).
    kafka_partitions: int | None = Field(None, ge=1, le=10000)
    # Replicas of a topic reporun creates (default: 3, or fewer on a smaller cluster).
    kafka_replication: int | None = Field(None, ge=1, le=32)
    kafka_max_poll_interval: float = Field(300.0, gt=0)
    kafka_session_timeout: float = Field(10.0, gt=0)
    kafka_rebalance_timeout: float = Field(30.0, gt=0)
    # An idle worker takes a job from PostgreSQL once it was queued this long without its
    # message reaching a free worker (behind a busy one, or while the broker was away).
    kafka_handoff: float = Field(1.0, ge=0)
    # The idempotent producer; a broker that refuses it gets acks=all alone (duplicates are
    # skipped by the claim anyway).
    kafka_idempotence: bool = True
    # The seed's compose environment.
    postgres_host: str | None = Field(None, validation_alias="POSTGRES_HOST")
    postgres_port: int = Field(5432, validation_alias="POSTGRES_PORT")
    postgres_db: str = Field("postgres", validation_alias="POSTGRES_DB")
    postgres_user: str = Field("postgres", validation_alias="POSTGRES_USER")
    postgres_password: SecretStr | None = Field(None, validation_alias="POSTGRES_PASSWORD")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    auth: Literal["local", "oidc"] = "local"
    secret_key: SecretStr | None = None
    oidc_issuer: str | None = None
    # Where the API reads the issuer's discovery document when the issuer's public address is
    # not reachable from it (inside a compose network: http://keycloak:8080/realms/reporun);
    # the document must still name REPORUN_OIDC_ISSUER as its issuer.
    oidc_discovery_url: str | None = Field(None, pattern=r"^https?://[^\s]+$")
    oidc_audience: str | None = None
    oidc_roles_claim: str = "realm_access.roles"
    # Keycloak often issues `aud: account` with the client in `azp`: require that instead.
    oidc_azp: str | None = None
    oidc_algorithms: Annotated[list[str], NoDecode] = ["RS256", "ES256", "PS256"]
    oidc_leeway: float = Field(30.0, ge=0, le=300)
    # Fetch the issuer's keys again for an unknown kid at most this often.
    oidc_jwks_refresh: float = Field(10.0, ge=0)
    # The dashboard: where browsers reach this server (the OIDC redirect URI and sign-in links
    # are made from it; unset: the address each request came to), the realm's client it signs
    # in through (its secret when it is confidential), and how long a sign-in lasts.
    public_url: str | None = Field(None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    oidc_web_client: str = "reporun-web"
    oidc_web_secret: SecretStr | None = None
    session_ttl: int = Field(12 * 3600, ge=60, le=30 * 86400)
    # Per user (0: no limit): jobs queued or running, and submissions a minute. Admins have
    # their own limits, none by default.
    quota_pending: int = Field(1000, ge=0)
    quota_per_minute: int = Field(600, ge=0)
    admin_quota_pending: int = Field(0, ge=0)
    admin_quota_per_minute: int = Field(0, ge=0)
    # Serve /metrics without a token (a scraper inside a private network).
    metrics_public: bool = False

    # Limits: what a job gets unless it asks for less, and the most it may ask for.
    timeout_default: int = Field(600, ge=1)
    timeout_max: int = Field(3600, ge=1)
    memory_default: int = Field(1 * GiB, ge=16 * MiB)
    memory_max: int = Field(4 * GiB, ge=16 * MiB)
    processes_default: int = Field(256, ge=8)
    processes_max: int = Field(1024, ge=8)
    log_limit_default: int = Field(1 * MiB, ge=1 * KiB)
    log_limit_max: int = Field(16 * MiB, ge=1 * KiB)
    disk_default: int = Field(1 * GiB, ge=1 * MiB)
    disk_max: int = Field(4 * GiB, ge=1 * MiB)
    env_max_vars: int = 64
    env_max_bytes: int = 32 * KiB
    command_max_bytes: int = 8 * KiB
    max_body_bytes: int = 64 * KiB

    # Repository URLs.
    allowed_schemes: Annotated[list[str], NoDecode] = ["https"]
    allowed_hosts: Annotated[list[str], NoDecode] = []
    # Hosts that may resolve to private or loopback addresses (a company's own GitLab).
    trusted_hosts: Annotated[list[str], NoDecode] = []
    # Network mode `registries`: the hosts its proxy lets a job reach (`*.suffix` for a
    # domain's hosts), and those of them that may resolve to private addresses (a mirror
    # inside the company). Loopback, link-local and this host's addresses never.
    egress_hosts: Annotated[list[str], NoDecode] = list(DEFAULT_EGRESS_HOSTS)
    egress_private_hosts: Annotated[list[str], NoDecode] = []
    # Network mode `open` (an isolated network of the job's own, through slirp4netns, with
    # private, link-local and this host's addresses still refused): for whom. `admins` means
    # every admin; other entries are user names. Empty (the default): for nobody.
    network_open: Annotated[list[str], NoDecode] = []
    # What such a job may not reach besides the private, shared, link-local, loopback,
    # multicast and reserved ranges and this host's own addresses: IPv4 networks (a company's
    # public address space, a VPN's routes).
    network_open_refused: Annotated[list[IPv4Network], NoDecode] = []
    # Where a worker keeps what setup phases made (default: beside its work dir), and at most
    # how many bytes of it (the least recently used go first).
    setup_cache_path: Path | None = Field(None, validation_alias="REPORUN_SETUP_CACHE_DIR")
    setup_cache_max: int = Field(10 * GiB, ge=0)
    # Accept local paths, file:// and loopback hosts (set by `reporun serve`).
    allow_local_repos: bool = False

    sandbox: Literal["bwrap", "none"] = "bwrap"
    # Runtimes besides `host` (the worker's own /usr): name=image,... where each image is an
    # OCI reference skopeo takes (docker://python:3.12-slim, oci-archive:/srv/node-20.tar).
    runtimes: Annotated[dict[str, str], NoDecode] = {}
    # The runtime of a job that names none (in its request or its reporun.toml).
    runtime_default: str = "host"
    # Where a worker keeps the roots it prepared (default: runtimes/ in the work dir); the
    # jobs' uids must be able to pass through every directory above it.
    runtimes_path: Path | None = Field(None, validation_alias="REPORUN_RUNTIMES_DIR")
    # The range of uids jobs run as when the worker is root (default: the sandbox's own).
    sandbox_uid_base: int | None = Field(None, ge=1000)
    sandbox_uid_count: int | None = Field(None, ge=1)
    checkout_timeout: float = 300.0

    worker_id: str | None = None
    # Set by `reporun serve` for its workers: they drain when that process is gone.
    parent_pid: int | None = None
    lease_seconds: float = Field(30.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    poll_interval: float = Field(0.2, gt=0)
    # PostgreSQL: wake idle workers with LISTEN/NOTIFY (false: poll only).
    notify: bool = True
    drain_grace: float = Field(600.0, ge=0)
    workers: int = Field(2, ge=0, le=64)

    # Elasticity: the observer keeps between min_workers and max_workers (a fixed pool of
    # `workers` when neither is set), aiming at a p95 queue wait of target_wait seconds.
    min_workers: int | None = Field(None, ge=0, le=1024)
    max_workers: int | None = Field(None, ge=0, le=1024)
    target_wait: float = Field(2.0, gt=0)
    scale_in_cooldown: float = Field(60.0, ge=0)
    observe_interval: float = Field(0.5, gt=0, le=60)
    # Waits of the jobs that started this long ago at most make the p95.
    observe_window: float = Field(10.0, gt=0)
    # none: start nothing, only record how many workers there should be (Kubernetes, where a
    # Deployment's replicas or the cluster's autoscaler follow reporun_workers_desired).
    scaler: Literal["local", "docker", "none"] = "local"
    # The docker scaler: the Compose project and service whose containers are the workers.
    docker_project: str | None = None
    docker_service: str = "worker"
    # What a new worker container gets for bubblewrap to work inside it (never --privileged):
    # /proc unmasked for the job's own procfs, and seccomp that allows sethostname.
    docker_security_opt: Annotated[list[str], NoDecode] = [
        "systempaths=unconfined",
        "seccomp=unconfined",
    ]
    docker_host: str = Field(
        "unix:///var/run/docker.sock",
        validation_alias=AliasChoices("REPORUN_DOCKER_HOST", "DOCKER_HOST"),
    )

    # A worker's or an observer's probes (/healthz, /readyz) for a container healthcheck or
    # Kubernetes; off unless set (the API serves its own).
    health_port: int | None = Field(None, ge=0, le=65535)
    health_host: str = "0.0.0.0"

    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    @field_validator(
        "allowed_schemes",
        "allowed_hosts",
        "trusted_hosts",
        "egress_hosts",
        "egress_private_hosts",
        "network_open",
        "network_open_refused",
        "oidc_algorithms",
        "docker_security_opt",
        mode="before",
    )
    @classmethod
    def _split_csv(cls, value: object) -> object:
        return _csv(value)

    @field_validator("runtimes", mode="before")
    @classmethod
    def _parse_runtimes(cls, value: object) -> object:
        try:
            return parse_runtimes(value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    @model_validator(mode="after")
    def _limits_within_maxima(self) -> Settings:
        for name in ("timeout", "memory", "processes", "log_limit", "disk"):
            if getattr(self, f"{name}_default") > getattr(self, f"{name}_max"):
                raise ValueError(f"{name}_default is above {name}_max")
        if (
            self.min_workers is not None
            and self.max_workers is not None
            and self.min_workers > self.max_workers
        ):
            raise ValueError("min_workers is above max_workers")
        return self

    @property
    def pool_bounds(self) -> tuple[int, int]:
        """The fewest and most workers the observer keeps."""
        if self.min_workers is None and self.max_workers is None:
            return self.workers, self.workers
        if self.min_workers is None:
            assert self.max_workers is not None
            return min(1, self.max_workers), self.max_workers
        high = self.max_workers if self.max_workers is not None else self.workers
        return self.min_workers, max(self.min_workers, high)

    # Derived paths -------------------------------------------------------------------------
    @property
    def db_url(self) -> str:
        if self.database_url:
            return normalize_database_url(self.database_url)
        if self.postgres_host:
            password = self.postgres_password.get_secret_value() if self.postgres_password else ""
            auth = f"{self.postgres_user}:{password}" if password else self.postgres_user
            return (
                f"postgresql+asyncpg://{auth}@{self.postgres_host}:"
                f"{self.postgres_port}/{self.postgres_db}"
            )
        return f"sqlite+aiosqlite:///{(self.data_dir / DATABASE_FILE).resolve()}"

    @property
    def mirrors_dir(self) -> Path:
        return self.data_dir / "mirrors"

    @property
    def runtimes_dir(self) -> Path:
        """Where a worker keeps the root filesystems it prepared, one per image digest: in
        the work dir, which the jobs' uids may pass through (the data dir is private)."""
        return self.runtimes_path or self.job_work_dir / "runtimes"

    @property
    def catalog(self) -> Catalog:
        """The runtimes; ConfigError (one line) when the default is not one of them."""
        return Catalog(self.runtimes, self.runtime_default)

    @property
    def job_work_dir(self) -> Path:
        if self.work_dir is not None:
            return self.work_dir
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / "reporun-work" / digest

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / ADMIN_TOKEN_FILE

    @property
    def secret_key_path(self) -> Path:
        return self.data_dir / SECRET_KEY_FILE

    def required_bootstrap(self) -> str:
        """The broker REPORUN_QUEUE=kafka cannot do without, on the database it needs."""
        if not self.kafka_bootstrap:
            raise ConfigError("REPORUN_QUEUE=kafka needs REPORUN_KAFKA_BOOTSTRAP (host:port)")
        if not self.db_url.startswith("postgresql"):
            raise ConfigError(
                "REPORUN_QUEUE=kafka needs PostgreSQL: set REPORUN_DATABASE_URL or POSTGRES_HOST"
            )
        return self.kafka_bootstrap

    def required_issuer(self) -> str:
        """The OIDC issuer, which REPORUN_AUTH=oidc cannot do without."""
        if not self.oidc_issuer:
            raise ConfigError("REPORUN_AUTH=oidc needs REPORUN_OIDC_ISSUER")
        return self.oidc_issuer

    def check_secure(self, *, embedded: bool) -> None:
        """Refuse insecure settings at start, with one clear line."""
        loopback = is_loopback_host(self.host)
        if self.auth == "local" and not embedded:
            key = self.secret_key.get_secret_value() if self.secret_key else ""
            if key in KNOWN_WEAK_SECRETS or len(key) < 32:
                raise ConfigError(
                    "REPORUN_SECRET_KEY must be set to a random value of at least 32 characters "
                    "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
                )
        if self.auth == "oidc":
            self.required_issuer()
        if self.allow_local_repos and not loopback:
            raise ConfigError("local repositories are allowed only on a loopback address")
        if self.sandbox == "none" and not loopback:
            raise ConfigError("REPORUN_SANDBOX=none is allowed only on a loopback address")
        password = self.postgres_password.get_secret_value() if self.postgres_password else None
        if (
            not loopback
            and self.postgres_host
            and not self.database_url
            and password in KNOWN_WEAK_SECRETS
        ):
            raise ConfigError("POSTGRES_PASSWORD is a default value; set a real one off loopback")


def normalize_database_url(url: str) -> str:
    """Accept the URLs people write and pick the async driver for them."""
    for prefix, driver in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("sqlite:///", "sqlite+aiosqlite:///"),
    ):
        if url.startswith(prefix):
            return driver + url[len(prefix) :]
    return url
