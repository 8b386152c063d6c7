"""runtime and runtime_digest: the runtime a job asked for, then the one it ran in and that
image's digest (null for `host`)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("runtime", sa.String(64)))
        batch.add_column(sa.Column("runtime_digest", sa.String(100)))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("runtime_digest")
        batch.drop_column("runtime")
