"""Fixtures: every test that takes `engine` runs on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import inspect, text

from conveyor.db import init_db, make_engine
from conveyor.schema import metadata

PG_URL = os.environ.get("CONVEYOR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_available() -> bool:
    try:
        eng = make_engine(PG_URL)
        with eng.connect() as c:
            c.execute(text("select 1"))
        eng.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_schema():
    """A private PostgreSQL schema for this test session (dropped at the end)."""
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_URL} is required on CI and is not reachable")
        pytest.skip(f"PostgreSQL at {PG_URL} not reachable")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    eng = make_engine(PG_URL)
    with eng.begin() as c:
        c.execute(text(f"create schema {schema}"))
    yield schema
    with eng.begin() as c:
        c.execute(text(f"drop schema {schema} cascade"))
    eng.dispose()


def pg_url_for(schema: str) -> str:
    """A PostgreSQL URL whose search_path is the test schema (also for subprocesses)."""
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty job database URL: a SQLite file, or a cleaned PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/conveyor.db"
        return
    schema = request.getfixturevalue("pg_schema")
    url = pg_url_for(schema)
    eng = make_engine(url)
    init_db(eng)
    with eng.begin() as c:
        # the core's tables and any a plugin's history made here before (conveyor_files)
        tables = {t.name for t in metadata.sorted_tables} | {
            n for n in inspect(c).get_table_names() if n.startswith("conveyor_") and not n.endswith("schema_version")}
        c.execute(text(f"truncate {', '.join(sorted(tables))} restart identity"))
    eng.dispose()
    yield url


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    init_db(eng)
    yield eng
    eng.dispose()


# ---------------------------------------------------------------- app fixtures

import sys

from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.plugins import load_plugins

from pipeline_support import TESTS, Pipeline

sys.path.insert(0, str(TESTS / "plugins"))
TEST_PLUGINS = "conveyor_testkinds"


def queue_url_for_test() -> str:
    """The queue under test: CONVEYOR_TEST_QUEUE_URL (sql by default), private per test."""
    url = os.environ.get("CONVEYOR_TEST_QUEUE_URL", "sql")
    if url.startswith("memory"):
        return f"memory://t{uuid.uuid4().hex}"
    return url


@pytest.fixture
def env(db_url, tmp_path):
    """CONVEYOR_* variables of a private deployment (for in-process apps and subprocesses)."""
    storage = os.environ.get("CONVEYOR_TEST_STORAGE_URL")
    storage = f"{storage.rstrip('/')}/{uuid.uuid4().hex}" if storage else f"file://{tmp_path}/data"
    return {
        "CONVEYOR_DB_URL": db_url,
        "CONVEYOR_QUEUE_URL": queue_url_for_test(),
        "CONVEYOR_STORAGE_URL": storage,
        "CONVEYOR_STREAM_KEY": f"conveyor:test:{uuid.uuid4().hex[:12]}",
        "CONVEYOR_LEASE_SECONDS": "3",
        "CONVEYOR_RECLAIM_GRACE_SECONDS": "1",
        "CONVEYOR_RETRY_BASE_SECONDS": "0.05",
        "CONVEYOR_RETRY_MAX_SECONDS": "0.2",
        "CONVEYOR_REPAIR_INTERVAL_SECONDS": "0.5",
        "CONVEYOR_PLUGINS": TEST_PLUGINS,
    }


@pytest.fixture
def app(env):
    """A Conveyor on a fresh database with the built-in and test job kinds."""
    settings = load_settings(env=env)
    a = Conveyor(settings, plugins=load_plugins(TEST_PLUGINS))
    a.init_db()
    yield a
    a.close()
    a.engine.dispose()
    if settings.queue_url.startswith("redis"):
        import redis
        client = redis.Redis.from_url(settings.queue_url)
        keys = list(client.scan_iter(match=f"{settings.stream_key}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def pipeline(app):
    """Factory: `with pipeline(concurrency=2) as p: ...`."""
    return lambda **kw: Pipeline(app, **kw)
