"""Fixtures of the HTTP API tests: a real uvicorn on a free loopback port, tokens, a worker."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from conveyor.api.app import create_app
from conveyor.api.auth import mint_token
from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.plugins import load_plugins

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

SECRET = "s3cr3t-for-tests-only-0123456789abcdef"
API_PLUGINS = "conveyor_testkinds,conveyor_api_testroutes,conveyor_api_brokenroutes"


class Server:
    """uvicorn serving one ASGI app in a thread of the test process."""

    def __init__(self, asgi, host: str = "127.0.0.1", **config) -> None:
        self.config = uvicorn.Config(asgi, host=host, port=0, log_level="warning", lifespan="off",
                                     timeout_graceful_shutdown=1, **config)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        sock = self.server.servers[0].sockets[0]
        self.port = sock.getsockname()[1]
        self.url = f"http://{self.config.host}:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def api_env(env):
    """The private deployment's variables plus the API's: a JWT secret, fast event streams, test plugins."""
    return {**env, "CONVEYOR_JWT_SECRET": SECRET, "CONVEYOR_SSE_POLL_SECONDS": "0.05",
            "CONVEYOR_SSE_HEARTBEAT_SECONDS": "0.5", "CONVEYOR_PLUGINS": API_PLUGINS}


def make_app(env: dict, **changes) -> Conveyor:
    settings = load_settings(env=env)
    if changes:
        settings = settings.with_(**changes)
    return Conveyor(settings, plugins=load_plugins(settings.plugins))


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


def token(sub: str = "alice", *, tenant: str = "default", org: str | None = None, admin: bool = False,
          ttl: float = 600, secret: str = SECRET, **extra) -> str:
    """An HS256 token signed with the test secret."""
    return mint_token(secret, sub, tenant=tenant, org=org, roles=["admin"] if admin else [], ttl_s=ttl,
                      extra=extra)


def auth(tok: str, **headers) -> dict:
    return {"Authorization": f"Bearer {tok}", **headers}


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


def sse_events(client: httpx.Client, path: str, headers: dict | None = None, limit: int = 1000,
               timeout: float = 30) -> list[tuple[str, str | None, str]]:
    """Read an event stream until it ends (or ``limit`` messages): ``(event, id, data)`` each."""
    from conveyor.client import SseParser
    out = []
    parser = SseParser()
    with client.stream("GET", path, headers=headers or {}, timeout=timeout) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            msg = parser.feed(line)
            if msg is None:
                continue
            out.append((msg.event, msg.id, msg.data))
            if msg.event == "end" or len(out) >= limit:
                break
    return out


@pytest.fixture
def pipeline_factory(api_app):
    """Start a dispatcher and worker later in a test: ``with pipeline_factory(): ...``."""
    from pipeline_support import Pipeline
    return lambda **kw: Pipeline(api_app, **{"concurrency": 2, **kw})
