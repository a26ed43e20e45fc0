"""Fixtures: every test that takes `engine` runs on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import text

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
        names = ", ".join(t.name for t in metadata.sorted_tables)
        c.execute(text(f"truncate {names} restart identity"))
    eng.dispose()
    yield url


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    init_db(eng)
    yield eng
    eng.dispose()
