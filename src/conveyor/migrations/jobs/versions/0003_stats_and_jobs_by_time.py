"""the dashboard's history (conveyor_stats) and an index of every tenant's jobs, newest first

``conveyor_stats`` holds one row per minute and tenant (and one per minute for the whole
deployment, tenant ``*``) that the scheduler's leader rolls up: jobs submitted, succeeded
and failed, submit-to-finish p50 and p99, and the queue and outbox gauges.
``ix_conveyor_jobs_created`` serves the all-tenant job list and the roll-up's count of
submissions. Built with a plain ``CREATE INDEX``; on a large table build it first with
``CREATE INDEX CONCURRENTLY`` under the same name (docs/operations.md, "Upgrading").

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_conveyor_jobs_created", "conveyor_jobs", ["created_at", "id"], if_not_exists=True)
    bind = op.get_bind()
    if "conveyor_stats" not in sa.inspect(bind).get_table_names():
        op.create_table(
            "conveyor_stats",
            sa.Column("minute", sa.DateTime, primary_key=True),
            sa.Column("tenant_id", sa.String(200), primary_key=True),
            sa.Column("submitted", sa.Integer, nullable=False),
            sa.Column("succeeded", sa.Integer, nullable=False),
            sa.Column("failed", sa.Integer, nullable=False),
            sa.Column("p50_ms", sa.Integer),
            sa.Column("p99_ms", sa.Integer),
            sa.Column("queue_length", sa.Integer),
            sa.Column("queue_pending", sa.Integer),
            sa.Column("oldest_age_ms", sa.BigInteger().with_variant(sa.Integer(), "sqlite")),
            sa.Column("outbox_pending", sa.Integer),
        )


def downgrade() -> None:
    op.drop_table("conveyor_stats")
    op.drop_index("ix_conveyor_jobs_created", "conveyor_jobs")
