"""job_logs.offset: where each chunk of a job's log begins, in bytes (what a stream of the
log resumes from); the chunks stored before it are given theirs

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_logs") as batch:
        batch.add_column(sa.Column("offset", sa.BigInteger, nullable=False, server_default="0"))
    # Each chunk begins where the ones before it in its job's log end (length() counts bytes
    # of a blob in SQLite and of a bytea in PostgreSQL).
    op.execute(
        """
        UPDATE job_logs SET "offset" = (
            SELECT COALESCE(SUM(length(earlier.data)), 0) FROM job_logs AS earlier
            WHERE earlier.job_id = job_logs.job_id AND earlier.seq < job_logs.seq
        )
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("job_logs") as batch:
        batch.drop_column("offset")
