"""The tables (SQLAlchemy Core), usable from a host application's own metadata."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

_BigInt = BigInteger().with_variant(Integer(), "sqlite")


def _where(condition: str) -> dict[str, Any]:
    """A partial index's predicate, for both dialects."""
    return {"postgresql_where": text(condition), "sqlite_where": text(condition)}


_OPEN = "status IN ('queued', 'running')"


def define_tables(md: MetaData) -> dict[str, Table]:
    """Add Conveyor's tables to ``md`` (a host app's metadata) and return them by short name."""
    jobs = Table(
        "conveyor_jobs", md,
        Column("id", String(36), primary_key=True),
        Column("kind", String(200), nullable=False),
        Column("tenant_id", String(200), nullable=False, default="default"),
        Column("org_id", String(200)),
        Column("status", String(16), nullable=False),
        Column("priority", Integer, nullable=False, default=0),
        Column("payload", JSON),
        Column("result", JSON),
        Column("error_code", String(100)),
        Column("last_error", Text),
        Column("error_history", JSON),
        Column("attempt_id", Integer, nullable=False, default=0),
        Column("attempts", Integer, nullable=False, default=0),
        Column("max_attempts", Integer, nullable=False, default=3),
        Column("lease_owner", String(200)),
        Column("lease_expires_at", DateTime),
        Column("next_attempt_at", DateTime),
        Column("idempotency_key", String(200)),
        Column("file_id", String(36)),
        Column("trace_id", String(64)),
        Column("created_at", DateTime, nullable=False),
        Column("updated_at", DateTime, nullable=False),
        Column("started_at", DateTime),
        Column("finished_at", DateTime),
        # Partial indexes: a job row is rewritten at claim and at finalize, and each write
        # inserts into every index whose predicate the new row meets, so an index only
        # holds the rows its queries look for (open jobs, finished jobs, set keys).
        Index("uq_conveyor_jobs_idem", "tenant_id", "idempotency_key", unique=True,
              **_where("idempotency_key IS NOT NULL")),
        Index("ix_conveyor_jobs_file_id", "file_id", **_where("file_id IS NOT NULL")),
        Index("ix_conveyor_jobs_status_lease", "status", "lease_expires_at", **_where(_OPEN)),
        Index("ix_conveyor_jobs_kind_status", "kind", "status", **_where(_OPEN)),
        Index("ix_conveyor_jobs_finished", "finished_at", **_where("finished_at IS NOT NULL")),
        # the API's pages: one tenant's jobs, newest first (its key never changes, so it costs an
        # entry per row version, nothing more)
        Index("ix_conveyor_jobs_tenant_created", "tenant_id", "created_at", "id"),
        # every tenant's jobs, newest first (an admin's list) and the minute roll-up's submissions
        Index("ix_conveyor_jobs_created", "created_at", "id"),
    )
    outbox = Table(
        "conveyor_outbox", md,
        Column("id", _BigInt, primary_key=True, autoincrement=True),
        Column("job_id", String(36), nullable=False, index=True),
        Column("stream", String(200), nullable=False),
        Column("message", JSON, nullable=False),
        Column("status", String(16), nullable=False, default="pending"),
        Column("attempts", Integer, nullable=False, default=0),
        Column("next_attempt_at", DateTime, nullable=False),
        Column("last_error", Text),
        Column("created_at", DateTime, nullable=False),
        Column("dispatched_at", DateTime),
        Column("stream_entry_id", String(64)),
        Index("ix_conveyor_outbox_pending", "status", "next_attempt_at", **_where("status = 'pending'")),
        sqlite_autoincrement=True,  # ids are identities (entry ids, cursors): never reuse one
    )
    events = Table(
        "conveyor_job_events", md,
        Column("id", _BigInt, primary_key=True, autoincrement=True),
        Column("job_id", String(36), nullable=False, index=True),
        Column("file_id", String(36)),
        Column("attempt_id", Integer, nullable=False, default=0),
        Column("action", String(32), nullable=False),
        Column("payload", JSON),
        Column("created_at", DateTime, nullable=False),
        sqlite_autoincrement=True,
    )
    workers = Table(
        "conveyor_workers", md,
        Column("name", String(200), primary_key=True),
        Column("role", String(32), nullable=False),
        Column("host", String(200), nullable=False),
        Column("pid", Integer, nullable=False),
        Column("slots", Integer, nullable=False, default=0),
        Column("in_flight", Integer, nullable=False, default=0),
        Column("version", String(32)),
        Column("started_at", DateTime, nullable=False),
        Column("last_progress_at", DateTime, nullable=False),
        Column("last_seen_at", DateTime, nullable=False),
        Column("stopped_at", DateTime),
    )
    leases = Table(
        "conveyor_leases", md,
        Column("name", String(200), primary_key=True),
        Column("holder", String(200)),
        Column("token", _BigInt, nullable=False, default=0),
        Column("expires_at", DateTime),
    )
    queue = Table(
        "conveyor_queue", md,
        Column("id", _BigInt, primary_key=True, autoincrement=True),
        Column("stream", String(200), nullable=False),
        Column("job_id", String(36), nullable=False),
        Column("priority", Integer, nullable=False, default=0),
        Column("fields", JSON, nullable=False),
        Column("enqueued_at", DateTime, nullable=False),
        Column("consumer", String(200)),
        Column("delivered_at", DateTime),
        Column("deliveries", Integer, nullable=False, default=0),
        Index("ix_conveyor_queue_ready", "stream", "consumer", "priority", "id"),
        Index("ix_conveyor_queue_job", "job_id"),
        sqlite_autoincrement=True,  # an acked id reused by a new entry would confuse late acks and repair
    )
    # the dashboard's history: one row per minute and tenant ("*": the whole deployment, with the gauges),
    # rolled up by the scheduler's leader (conveyor.history)
    stats = Table(
        "conveyor_stats", md,
        Column("minute", DateTime, primary_key=True),
        Column("tenant_id", String(200), primary_key=True),
        Column("submitted", Integer, nullable=False),
        Column("succeeded", Integer, nullable=False),
        Column("failed", Integer, nullable=False),
        Column("p50_ms", Integer),
        Column("p99_ms", Integer),
        Column("queue_length", Integer),
        Column("queue_pending", Integer),
        Column("oldest_age_ms", _BigInt),
        Column("outbox_pending", Integer),
    )
    return {"jobs": jobs, "outbox": outbox, "events": events,
            "workers": workers, "leases": leases, "queue": queue, "stats": stats}


def define_control_tables(md: MetaData) -> dict[str, Table]:
    """Tables only the control database of a database-per-tenant deployment has (``conveyor.tenancy``)."""
    tenants = Table(
        "conveyor_tenants", md,
        Column("tenant", String(63), primary_key=True),
        Column("org", String(63), primary_key=True, default=""),  # "" when databases are per tenant
        Column("created_at", DateTime, nullable=False),
    )
    return {"tenants": tenants}


TABLES = define_tables(metadata)
jobs = TABLES["jobs"]
outbox = TABLES["outbox"]
events = TABLES["events"]
workers = TABLES["workers"]
leases = TABLES["leases"]
queue_entries = TABLES["queue"]
stats = TABLES["stats"]

#: the control database's own tables (created there next to every table of ``metadata``)
control_metadata = MetaData()
CONTROL_TABLES = define_control_tables(control_metadata)
tenants = CONTROL_TABLES["tenants"]
