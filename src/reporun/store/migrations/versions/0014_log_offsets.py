"""job_logs.offset: where each chunk of a job's log begins, in bytes (what a stream of the
log resumes from), the chunks stored before it given theirs; jobs.log_epoch and
job_logs.epoch: which of a job's logs (each start over is a new one) a chunk belongs to

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
        batch.add_column(sa.Column("epoch", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("log_epoch", sa.Integer, nullable=False, server_default="0"))
    # Each chunk begins where the ones before it in its job's log end (length() counts bytes
    # of a blob in SQLite and of a bytea in PostgreSQL): one pass, by a window.
    op.execute(
        """
        UPDATE job_logs SET "offset" = sums.start
        FROM (
            SELECT job_id, seq,
                   SUM(length(data)) OVER (PARTITION BY job_id ORDER BY seq) - length(data)
                   AS start
            FROM job_logs
        ) AS sums
        WHERE job_logs.job_id = sums.job_id AND job_logs.seq = sums.seq
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("log_epoch")
    with op.batch_alter_table("job_logs") as batch:
        batch.drop_column("epoch")
        batch.drop_column("offset")
