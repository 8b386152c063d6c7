"""jobs.phase_seconds: the worker's timings of the phases a job reached (fetch, checkout,
setup, sandbox start, run), written with its end

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on SQLite too: a batch would copy the table, and dropping the old
    # one would take its logs with it (ON DELETE CASCADE).
    op.add_column(
        "jobs",
        sa.Column("phase_seconds", sa.JSON, nullable=False, server_default=sa.text("'{}'")),
    )


def downgrade() -> None:
    op.drop_column("jobs", "phase_seconds")
