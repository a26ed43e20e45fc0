"""Fixtures for the Redis tests: the shared Redis (one key prefix per test) and private redis-servers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis_support import GROUP, PrivateRedis, Spawner, reachable

from conveyor.queue.redis import RedisQueue

REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared Redis (fails on CI when absent, skips elsewhere)."""
    if not reachable(REDIS_URL):
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is required on CI and is not reachable")
        pytest.skip(f"Redis at {REDIS_URL} not reachable")
    return REDIS_URL


@pytest.fixture
def stream_key(redis_url: str) -> Iterator[str]:
    """A stream key no other test uses; every key under it is deleted afterwards."""
    prefix = f"ctest:{uuid.uuid4().hex[:12]}"
    yield f"{prefix}:jobs"
    r = redis.Redis.from_url(redis_url)
    keys = list(r.scan_iter(f"{prefix}:*"))
    if keys:
        r.delete(*keys)
    r.close()


@pytest.fixture
def rqueue(redis_url: str, stream_key: str) -> Iterator[RedisQueue]:
    """An empty RedisQueue with its group created."""
    q = RedisQueue(redis_url, stream=stream_key, group="ctest-workers")
    q.ensure_group()
    yield q
    q.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private redis-server with append-only persistence, stopped after the test."""
    srv = PrivateRedis(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


# ---------------------------------------------------------------- deployments on Redis

@pytest.fixture
def env(env: dict[str, str], redis_url: str, stream_key: str) -> dict[str, str]:
    """The core's private deployment, queued on the shared Redis under this test's key, with short leases."""
    return {**env, "CONVEYOR_QUEUE_URL": redis_url, "CONVEYOR_STREAM_KEY": stream_key,
            "CONVEYOR_STREAM_GROUP": GROUP, "CONVEYOR_LEASE_SECONDS": "2",
            "CONVEYOR_RECLAIM_GRACE_SECONDS": "1", "CONVEYOR_HEARTBEAT_SECONDS": "0.5"}


@pytest.fixture
def spawn(env: dict[str, str], tmp_path: Path) -> Iterator[Spawner]:
    """Factory of real worker processes for this deployment."""
    s = Spawner(env, tmp_path)
    try:
        yield s
    finally:
        s.cleanup()

