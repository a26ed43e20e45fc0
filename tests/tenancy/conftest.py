"""Fixtures of the tenancy tests: the real PostgreSQL server (databases made per run, dropped after) and Redis."""

from __future__ import annotations

import os
import sys

import pytest
from sqlalchemy import text
from tenancy_support import PG_SERVER, REDIS_URL, TESTS, admin_engine

from conveyor.config import mask_url

sys.path.insert(0, str(TESTS / "plugins"))


def _require(what: str, ok: bool) -> None:
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required on CI and is not reachable")
    pytest.skip(f"{what} not reachable")


@pytest.fixture(scope="session")
def pg_server():
    """The PostgreSQL server URL (no database) after checking that it answers and may create databases."""
    try:
        eng = admin_engine()
        with eng.connect() as c:
            ok = bool(c.execute(text("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"))
                      .scalar())
        eng.dispose()
    except Exception:
        ok = False
    _require(f"PostgreSQL at {mask_url(PG_SERVER)} (with CREATEDB)", ok)
    return PG_SERVER


@pytest.fixture(scope="session")
def redis_url():
    try:
        import redis
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        ok = bool(client.ping())
        client.close()
    except Exception:
        ok = False
    _require(f"Redis at {REDIS_URL}", ok)
    return REDIS_URL

