"""What the HTTP API tests share besides fixtures: a uvicorn server in a thread, tokens, an SSE reader.

A module of its own (not ``conftest``) so ``from api_support import ...`` names this directory's
helpers whichever other test directory pytest collected first.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import uvicorn

from conveyor.api.auth import mint_token
from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.plugins import load_plugins

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


def make_app(env: dict, **changes) -> Conveyor:
    settings = load_settings(env=env)
    if changes:
        settings = settings.with_(**changes)
    return Conveyor(settings, plugins=load_plugins(settings.plugins))


def token(sub: str = "alice", *, tenant: str = "default", org: str | None = None, admin: bool = False,
          ttl: float = 600, secret: str = SECRET, **extra) -> str:
    """An HS256 token signed with the test secret."""
    return mint_token(secret, sub, tenant=tenant, org=org, roles=["admin"] if admin else [], ttl_s=ttl,
                      extra=extra)


def auth(tok: str, **headers) -> dict:
    return {"Authorization": f"Bearer {tok}", **headers}


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
