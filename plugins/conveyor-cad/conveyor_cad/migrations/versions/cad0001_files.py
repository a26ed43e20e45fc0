"""the files table as release 0.1.0 made it

Creates ``conveyor_files`` when the database lacks it and leaves an existing one as it
is: release 0.1.0 made the table with the core's tables, and this revision takes it
over. Frozen: later changes are later revisions.

Revision ID: cad0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "cad0001"
down_revision = None
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("conveyor_files"):
        return
    op.create_table(
        "conveyor_files",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(200), nullable=False),
        sa.Column("org_id", sa.String(200)),
        sa.Column("filename", sa.String(1000), nullable=False),
        sa.Column("system_path", sa.Text, nullable=False),
        sa.Column("size", BIGINT, nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("content_type", sa.String(200)),
        sa.Column("cad_format", sa.String(32)),
        sa.Column("preview_path", sa.Text),
        sa.Column("geometry_path", sa.Text),
        sa.Column("conversion_status", sa.String(16)),
        sa.Column("conversion_error", sa.JSON),
        sa.Column("attributes", sa.JSON),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("conveyor_files")
