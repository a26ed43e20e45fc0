"""the job store's tables as release 0.1.0 made them

Creates each table a database lacks, with its indexes, and leaves an existing one as it
is: a database made before migrations existed (by ``create_all``) is taken over by the
same revision. Frozen: later changes are later revisions. (Release 0.1.0 also made
``conveyor_files``; it belongs to the CAD plugin, whose own history ``cad`` takes it over.)

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OPEN = "status IN ('queued', 'running')"


def _where(condition: str) -> dict[str, object]:
    return {"postgresql_where": sa.text(condition), "sqlite_where": sa.text(condition)}


def _tables() -> list[tuple[str, list[object], dict[str, object], list[tuple[str, list[str], dict[str, object]]]]]:
    """(name, columns, table options, indexes) of every table."""
    return [
        ("conveyor_jobs", [
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("kind", sa.String(200), nullable=False),
            sa.Column("tenant_id", sa.String(200), nullable=False),
            sa.Column("org_id", sa.String(200)),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("priority", sa.Integer, nullable=False),
            sa.Column("payload", sa.JSON),
            sa.Column("result", sa.JSON),
            sa.Column("error_code", sa.String(100)),
            sa.Column("last_error", sa.Text),
            sa.Column("error_history", sa.JSON),
            sa.Column("attempt_id", sa.Integer, nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("max_attempts", sa.Integer, nullable=False),
            sa.Column("lease_owner", sa.String(200)),
            sa.Column("lease_expires_at", sa.DateTime),
            sa.Column("next_attempt_at", sa.DateTime),
            sa.Column("idempotency_key", sa.String(200)),
            sa.Column("file_id", sa.String(36)),
            sa.Column("trace_id", sa.String(64)),
            sa.Column("created_at", sa.DateTime, nullable=False),
            sa.Column("updated_at", sa.DateTime, nullable=False),
            sa.Column("started_at", sa.DateTime),
            sa.Column("finished_at", sa.DateTime),
        ], {}, [
            ("uq_conveyor_jobs_idem", ["tenant_id", "idempotency_key"],
             {"unique": True, **_where("idempotency_key IS NOT NULL")}),
            ("ix_conveyor_jobs_file_id", ["file_id"], _where("file_id IS NOT NULL")),
            ("ix_conveyor_jobs_status_lease", ["status", "lease_expires_at"], _where(OPEN)),
            ("ix_conveyor_jobs_kind_status", ["kind", "status"], _where(OPEN)),
            ("ix_conveyor_jobs_finished", ["finished_at"], _where("finished_at IS NOT NULL")),
        ]),
        ("conveyor_outbox", [
            sa.Column("id", BIGINT, primary_key=True, autoincrement=True),
            sa.Column("job_id", sa.String(36), nullable=False),
            sa.Column("stream", sa.String(200), nullable=False),
            sa.Column("message", sa.JSON, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("next_attempt_at", sa.DateTime, nullable=False),
            sa.Column("last_error", sa.Text),
            sa.Column("created_at", sa.DateTime, nullable=False),
            sa.Column("dispatched_at", sa.DateTime),
            sa.Column("stream_entry_id", sa.String(64)),
        ], {"sqlite_autoincrement": True}, [
            ("ix_conveyor_outbox_job_id", ["job_id"], {}),
            ("ix_conveyor_outbox_pending", ["status", "next_attempt_at"], _where("status = 'pending'")),
        ]),
        ("conveyor_job_events", [
            sa.Column("id", BIGINT, primary_key=True, autoincrement=True),
            sa.Column("job_id", sa.String(36), nullable=False),
            sa.Column("file_id", sa.String(36)),
            sa.Column("attempt_id", sa.Integer, nullable=False),
            sa.Column("action", sa.String(32), nullable=False),
            sa.Column("payload", sa.JSON),
            sa.Column("created_at", sa.DateTime, nullable=False),
        ], {"sqlite_autoincrement": True}, [
            ("ix_conveyor_job_events_job_id", ["job_id"], {}),
        ]),
        ("conveyor_workers", [
            sa.Column("name", sa.String(200), primary_key=True),
            sa.Column("role", sa.String(32), nullable=False),
            sa.Column("host", sa.String(200), nullable=False),
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("slots", sa.Integer, nullable=False),
            sa.Column("in_flight", sa.Integer, nullable=False),
            sa.Column("version", sa.String(32)),
            sa.Column("started_at", sa.DateTime, nullable=False),
            sa.Column("last_progress_at", sa.DateTime, nullable=False),
            sa.Column("last_seen_at", sa.DateTime, nullable=False),
            sa.Column("stopped_at", sa.DateTime),
        ], {}, []),
        ("conveyor_leases", [
            sa.Column("name", sa.String(200), primary_key=True),
            sa.Column("holder", sa.String(200)),
            sa.Column("token", BIGINT, nullable=False),
            sa.Column("expires_at", sa.DateTime),
        ], {}, []),
        ("conveyor_queue", [
            sa.Column("id", BIGINT, primary_key=True, autoincrement=True),
            sa.Column("stream", sa.String(200), nullable=False),
            sa.Column("job_id", sa.String(36), nullable=False),
            sa.Column("priority", sa.Integer, nullable=False),
            sa.Column("fields", sa.JSON, nullable=False),
            sa.Column("enqueued_at", sa.DateTime, nullable=False),
            sa.Column("consumer", sa.String(200)),
            sa.Column("delivered_at", sa.DateTime),
            sa.Column("deliveries", sa.Integer, nullable=False),
        ], {"sqlite_autoincrement": True}, [
            ("ix_conveyor_queue_ready", ["stream", "consumer", "priority", "id"], {}),
            ("ix_conveyor_queue_job", ["job_id"], {}),
        ]),
    ]


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, columns, options, indexes in _tables():
        if name in existing:
            continue
        op.create_table(name, *columns, **options)  # type: ignore[arg-type]
        for index, cols, kw in indexes:
            op.create_index(index, name, cols, **kw)  # type: ignore[arg-type]


def downgrade() -> None:
    for name, _, _, _ in reversed(_tables()):
        op.drop_table(name)
