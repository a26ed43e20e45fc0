"""The CAD plugin's table, ``conveyor_files``, in a metadata of its own (history ``cad``, ``conveyor_migrations``)."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, DateTime, Integer, MetaData, String, Table, Text

from conveyor.plugin_api import Migrations

metadata = MetaData()

_BigInt = BigInteger().with_variant(Integer(), "sqlite")

files = Table(
    "conveyor_files", metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(200), nullable=False, default="default"),
    Column("org_id", String(200)),
    Column("filename", String(1000), nullable=False),
    Column("system_path", Text, nullable=False),
    Column("size", _BigInt, nullable=False, default=0),
    Column("sha256", String(64)),
    Column("content_type", String(200)),
    Column("cad_format", String(32)),
    Column("preview_path", Text),
    Column("geometry_path", Text),
    Column("conversion_status", String(16)),
    Column("conversion_error", JSON),
    Column("attributes", JSON),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

#: the plugin's schema history, applied to every job database by ``conveyor db upgrade``
MIGRATIONS = Migrations("cad", "conveyor_cad", "conveyor_cad_schema_version", metadata, "cad0001", "migrations")
