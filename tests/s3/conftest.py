"""A moto S3 server for the session, and a fresh prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from moto_support import MotoServer

BUCKET = "conveyor-s3-tests"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """A real S3-compatible HTTP server on loopback, with one bucket."""
    srv = MotoServer()
    srv.start()
    try:
        srv.create_bucket(BUCKET)
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def s3_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The standard AWS variables set for this test (endpoint, key, secret, region)."""
    env = moto_server.env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    return env


@pytest.fixture
def s3_url(s3_env: dict[str, str]) -> str:
    """s3://bucket/prefix, a prefix no other test uses."""
    return f"s3://{BUCKET}/t{uuid.uuid4().hex[:12]}"
