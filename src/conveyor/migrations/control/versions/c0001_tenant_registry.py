"""the registry of tenant databases

Revision ID: c0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("conveyor_tenants"):  # made before migrations existed
        return
    op.create_table(
        "conveyor_tenants",
        sa.Column("tenant", sa.String(63), primary_key=True),
        sa.Column("org", sa.String(63), primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("conveyor_tenants")
