"""The dashboard: web_sessions (a browser's sign-in, looked up by the hash of its cookie) and
signin_codes (one-time sign-in links), each with the local token it came from; jobs.rerun_of
(the job a re-run repeats); indexes for the jobs page's filters by status, repository and
owner, newest first

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from reporun.store.tables import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("roles", sa.String(64), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("id_token", sa.Text),
        sa.Column("token_id", sa.String(64)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_web_sessions_expires", "web_sessions", ["expires_at"])
    op.create_table(
        "signin_codes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("roles", sa.String(64), nullable=False),
        sa.Column("token_id", sa.String(64)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_signin_codes_expires", "signin_codes", ["expires_at"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("rerun_of", sa.Uuid))
    op.create_index("ix_jobs_rerun_of", "jobs", ["rerun_of"])
    op.create_index("ix_jobs_status_created", "jobs", ["status", "created_at", "id"])
    op.create_index("ix_jobs_repo_created", "jobs", ["repo", "created_at", "id"])
    # Its owner's jobs by status, newest first; it serves the quota's count as the index on
    # (owner, status) did.
    op.create_index("ix_jobs_owner_status_created", "jobs", ["owner", "status", "created_at", "id"])
    op.drop_index("ix_jobs_owner_status", "jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_owner_status", "jobs", ["owner", "status"])
    op.drop_index("ix_jobs_owner_status_created", "jobs")
    op.drop_index("ix_jobs_repo_created", "jobs")
    op.drop_index("ix_jobs_status_created", "jobs")
    op.drop_index("ix_jobs_rerun_of", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("rerun_of")
    op.drop_index("ix_signin_codes_expires", "signin_codes")
    op.drop_table("signin_codes")
    op.drop_index("ix_web_sessions_expires", "web_sessions")
    op.drop_table("web_sessions")
