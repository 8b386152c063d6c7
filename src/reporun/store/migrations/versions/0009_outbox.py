"""outbox: messages for Kafka (a job to hand out, a job that ended), written in the transaction
that changed the job and published by the API's relay

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from reporun.store.tables import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
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
    )
    op.create_index("ix_outbox_published", "outbox", ["published_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_published", table_name="outbox")
    op.drop_table("outbox")
