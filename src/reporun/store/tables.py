"""The schema, in SQLAlchemy Core. Alembic migrations build exactly this (a test proves it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData()


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the database keeps."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stamp: datetime = value
        if stamp.tzinfo is None:
            return stamp.replace(tzinfo=UTC)
        return stamp.astimezone(UTC)


jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("repo", sa.Text, nullable=False),
    sa.Column("ref", sa.String(255)),
    sa.Column("commit", sa.String(64)),
    sa.Column("command", sa.Text),
    sa.Column("env", sa.JSON, nullable=False),
    sa.Column("limits", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("exit_code", sa.Integer),
    sa.Column("reason", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("worker", sa.String(255)),
    # Start-time fair queuing: claims take the smallest tag (see store.jobs.create_job).
    sa.Column("fair_tag", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # When it last went back to the queue (null: never); the observer's waits count from it.
    sa.Column("requeued_at", UTCDateTime),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("lease_expires_at", UTCDateTime),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("log_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("log_truncated", sa.Boolean, nullable=False, server_default=sa.false()),
    # How many times its log was started over (a new run after one that wrote some).
    sa.Column("log_epoch", sa.Integer, nullable=False, server_default="0"),
    # Whether its worker may clone from a local path or a loopback address (JobSpec).
    sa.Column("local_sources", sa.Boolean, nullable=False, server_default=sa.false()),
    # Whether it may have network mode `open` (JobSpec).
    sa.Column("network_open", sa.Boolean, nullable=False, server_default=sa.false()),
    # The runtime asked for (null: none named); from the start, the one it runs in and its
    # image's digest.
    sa.Column("runtime_requested", sa.String(64)),
    # The setup command: asked for, then the one that ran.
    sa.Column("setup", sa.Text),
    sa.Column("runtime", sa.String(64)),
    sa.Column("runtime_digest", sa.String(100)),
    # The job this one re-runs (the dashboard's re-run), if any.
    sa.Column("rerun_of", sa.Uuid),
    # The worker's timings of the phases the job reached (reporun.jobs.WORKER_PHASES).
    sa.Column("phase_seconds", sa.JSON, nullable=False, server_default=sa.text("'{}'")),
    sa.Index("ix_jobs_claim", "status", "fair_tag", "created_at"),
    sa.Index("ix_jobs_owner_created", "owner", "created_at", "id"),
    sa.Index("ix_jobs_created", "created_at", "id"),
    sa.Index("ix_jobs_lease", "status", "lease_expires_at"),
    sa.Index("ix_jobs_fair_tag", "fair_tag"),
    sa.Index("ix_jobs_finished", "finished_at"),
    sa.Index("ix_jobs_started", "started_at"),
    # The jobs page: by status, by repository, by owner and status, newest first.
    sa.Index("ix_jobs_status_created", "status", "created_at", "id"),
    sa.Index("ix_jobs_repo_created", "repo", "created_at", "id"),
    sa.Index("ix_jobs_owner_status_created", "owner", "status", "created_at", "id"),
    sa.Index("ix_jobs_rerun_of", "rerun_of"),
)

job_logs = sa.Table(
    "job_logs",
    metadata,
    sa.Column("job_id", sa.Uuid, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
    # Where the chunk begins in the job's log, in bytes (a stream resumes from an offset), and
    # which of the job's logs it is part of (jobs.log_epoch when it was written).
    sa.Column("offset", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("epoch", sa.Integer, nullable=False, server_default="0"),
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("current_job", sa.Uuid),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),
    sa.Index("ix_workers_heartbeat", "heartbeat_at"),
)

# What the observer decided, with what it saw (changes only: holds are not kept).
scaling_decisions = sa.Table(
    "scaling_decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("scaler", sa.String(32), nullable=False),
    sa.Column("direction", sa.String(8), nullable=False),
    sa.Column("actual", sa.Integer, nullable=False),
    sa.Column("desired", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("inputs", sa.JSON, nullable=False),
    sa.Index("ix_scaling_decisions_at", "at"),
)

# Local tokens (REPORUN_AUTH=local): a token works only while its row is here and not revoked.
tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # the token's `jti`
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime),
    sa.Column("revoked_at", UTCDateTime),
)

# Messages for Kafka (REPORUN_QUEUE=kafka), written in the transaction that changed the job and
# published by the API's relay (reporun.queue.relay); published rows are pruned after a while.
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("published_at", UTCDateTime),
    sa.Index("ix_outbox_published", "published_at", "id"),
)

# The dashboard's sign-ins: a browser's session, found by the SHA-256 of its cookie (a copy of
# the table gives no one a session), with the CSRF token its forms carry; and the one-time
# codes of sign-in links (also by hash), each deleted when used.
web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("roles", sa.String(64), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    # OIDC: the ID token, the hint of a sign-out at the issuer.
    sa.Column("id_token", sa.Text),
    # A local token's id: the session ends when that token is revoked or expires.
    sa.Column("token_id", sa.String(64)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index("ix_web_sessions_expires", "expires_at"),
)

signin_codes = sa.Table(
    "signin_codes",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("roles", sa.String(64), nullable=False),
    sa.Column("token_id", sa.String(64)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index("ix_signin_codes_expires", "expires_at"),
)
