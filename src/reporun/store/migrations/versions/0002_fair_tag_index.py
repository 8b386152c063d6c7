"""index jobs.fair_tag: a submission to an idle queue finds the newest tag without a scan

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_fair_tag", "jobs", ["fair_tag"])


def downgrade() -> None:
    op.drop_index("ix_jobs_fair_tag", table_name="jobs")
