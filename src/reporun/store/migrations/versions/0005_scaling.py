"""scaling: decisions of the observer, and an index on started_at for its wait window

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from reporun.store.tables import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_started", "jobs", ["started_at"])
    op.create_table(
        "scaling_decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("scaler", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("actual", sa.Integer, nullable=False),
        sa.Column("desired", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("inputs", sa.JSON, nullable=False),
    )
    op.create_index("ix_scaling_decisions_at", "scaling_decisions", ["at"])


def downgrade() -> None:
    op.drop_index("ix_scaling_decisions_at", table_name="scaling_decisions")
    op.drop_table("scaling_decisions")
    op.drop_index("ix_jobs_started", table_name="jobs")
