"""runtime_requested: the runtime a request named, apart from `runtime`, the one the job ran in
(a job run again chooses again from what was asked, not from what its last attempt got)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("runtime_requested", sa.String(64)))
    # A job that has not started yet holds its request in `runtime`.
    op.execute(
        "UPDATE jobs SET runtime_requested = runtime, runtime = NULL WHERE started_at IS NULL"
    )


def downgrade() -> None:
    op.execute("UPDATE jobs SET runtime = runtime_requested WHERE started_at IS NULL")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("runtime_requested")
