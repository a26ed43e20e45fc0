"""index of one tenant's jobs, newest first, for the API's job list

Built with a plain ``CREATE INDEX``, which holds writes to ``conveyor_jobs`` while it
runs; on a large table build it first with ``CREATE INDEX CONCURRENTLY`` under the
same name (docs/operations.md, "Upgrading"), and this revision keeps it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_conveyor_jobs_tenant_created", "conveyor_jobs", ["tenant_id", "created_at", "id"],
                    if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ix_conveyor_jobs_tenant_created", "conveyor_jobs")
