"""Fixtures of the HTTP API tests: a real uvicorn on a free loopback port, tokens, a worker."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from conveyor.api.app import create_app

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from api_support import API_PLUGINS, SECRET, Server, auth, make_app, token


@pytest.fixture
def api_env(env):
    """The private deployment's variables plus the API's: a JWT secret, fast event streams, test plugins."""
    return {**env, "CONVEYOR_JWT_SECRET": SECRET, "CONVEYOR_SSE_POLL_SECONDS": "0.05",
            "CONVEYOR_SSE_HEARTBEAT_SECONDS": "0.5", "CONVEYOR_PLUGINS": API_PLUGINS}


@pytest.fixture
def api_app(api_env):
    """A Conveyor on a fresh database with the test kinds and test API plugins."""
    a = make_app(api_env)
    a.init_db()
    yield a
    a.close()
    a.engine.dispose()


@pytest.fixture
def server(api_app):
    """The API of ``api_app`` served over real HTTP; yields its base URL."""
    with Server(create_app(api_app)) as s:
        yield s.url


@pytest.fixture
def http(server):
    """An httpx client on the server, authenticated as a plain user of tenant ``default``."""
    with httpx.Client(base_url=server + "/api/v1", headers=auth(token()), timeout=30) as c:
        yield c


@pytest.fixture
def worker(api_app):
    """A dispatcher and a worker running jobs of ``api_app`` in threads."""
    from pipeline_support import Pipeline
    with Pipeline(api_app, concurrency=2) as p:
        yield p


@pytest.fixture
def pipeline_factory(api_app):
    """Start a dispatcher and worker later in a test: ``with pipeline_factory(): ...``."""
    from pipeline_support import Pipeline
    return lambda **kw: Pipeline(api_app, **{"concurrency": 2, **kw})
