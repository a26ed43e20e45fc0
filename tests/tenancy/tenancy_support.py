"""Helpers of the tenancy tests: throwaway PostgreSQL databases, CLI subprocesses, an API server, tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from conveyor.api.auth import mint_token

TESTS = Path(__file__).resolve().parents[1]
#: the server of the suite's PostgreSQL (CONVEYOR_TEST_PG_URL); these tests make databases of their own on it
PG_URL = make_url(os.environ.get("CONVEYOR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
PG_SERVER = PG_URL.set(database=None).render_as_string(hide_password=False)
REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "s3cr3t-for-tenancy-tests-0123456789abcdef"


def pg_url(database: str) -> str:
    """The URL of one database on the test server."""
    return PG_URL.set(database=database).render_as_string(hide_password=False)


def pg_template(prefix: str) -> str:
    """CONVEYOR_DB_URL_TEMPLATE for databases ``{prefix}__{tenant}__{org}`` on the test server."""
    return pg_url(f"{prefix}__TENANT__ORG").replace("TENANT", "{tenant}").replace("ORG", "{org}")


def admin_engine():
    """An autocommit engine on the server's maintenance database (CREATE / DROP DATABASE)."""
    return create_engine(pg_url("postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT")


def databases(prefix: str) -> list[str]:
    """Names of the server's databases starting with ``prefix``."""
    eng = admin_engine()
    try:
        with eng.connect() as c:
            return sorted(c.execute(text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                                    {"p": prefix.replace("_", r"\_") + "%"}).scalars())
    finally:
        eng.dispose()


def drop_databases(prefix: str) -> list[str]:
    """Drop every database starting with ``prefix`` (sessions still connected are ended)."""
    names = databases(prefix)
    eng = admin_engine()
    try:
        with eng.connect() as c:
            for name in names:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        eng.dispose()
    return names


def create_database(name: str) -> None:
    eng = admin_engine()
    try:
        with eng.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        eng.dispose()


def pg_rows(url: str, sql: str, **params) -> list:
    eng = create_engine(url, poolclass=NullPool)
    try:
        with eng.connect() as c:
            return list(c.execute(text(sql), params))
    finally:
        eng.dispose()


def new_prefix() -> str:
    return f"cvt{uuid.uuid4().hex[:8]}"


def cli(env: dict, *args: str, cwd: Path, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m conveyor ARGS`` with ``env`` over the test's environment."""
    r = subprocess.run([sys.executable, "-m", "conveyor", *args], env={**os.environ, **env}, cwd=cwd,
                       capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"conveyor {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def cli_json(env: dict, *args: str, cwd: Path):
    return json.loads(cli(env, *args, cwd=cwd).stdout)


class Process:
    """A long-running ``conveyor`` command, its output in a log file."""

    def __init__(self, env: dict, *args: str, cwd: Path, name: str) -> None:
        self.log = cwd / f"{name}.log"
        self.name = name
        self._fh = open(self.log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "conveyor", "--log-level", "INFO", *args],
                                     env={**os.environ, **env}, cwd=cwd, stdout=self._fh, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._fh.close()
        return self.proc.returncode

    def output(self) -> str:
        self._fh.flush()
        return self.log.read_text()


class Server:
    """uvicorn serving one ASGI app in a thread of the test process."""

    def __init__(self, asgi, host: str = "127.0.0.1") -> None:
        self.config = uvicorn.Config(asgi, host=host, port=0, log_level="warning", lifespan="off",
                                     timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.config.host}:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def token(sub: str, *, tenant: str, org: str | None = None, admin: bool = False, **extra) -> str:
    return mint_token(SECRET, sub, tenant=tenant, org=org, roles=["admin"] if admin else [], ttl_s=600, extra=extra)


def client(base_url: str, sub: str, **claims) -> httpx.Client:
    return httpx.Client(base_url=base_url + "/api/v1", headers={"Authorization": f"Bearer {token(sub, **claims)}"},
                        timeout=30)


def wait_final(c: httpx.Client, job_id: str, timeout: float = 60.0) -> dict:
    """Poll GET /jobs/{id} until the job is final."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")
        time.sleep(0.02)


def sse_history(c: httpx.Client, timeout: float = 3.0) -> list[dict]:
    """The global event stream replayed from the start, read for ``timeout`` seconds."""
    from conveyor.client import SseParser
    out: list[dict] = []
    parser = SseParser()
    deadline = time.monotonic() + timeout
    with c.stream("GET", "/events/stream", headers={"Last-Event-ID": "0"},
                  timeout=httpx.Timeout(10, read=timeout)) as resp:
        assert resp.status_code == 200, resp.read()
        try:
            for line in resp.iter_lines():
                msg = parser.feed(line)
                if msg is not None and msg.data and msg.event in (None, "", "message"):
                    out.append(json.loads(msg.data))
                if time.monotonic() > deadline:
                    break
        except httpx.ReadTimeout:  # nothing more within the time (no keep-alive yet)
            pass
    return out


def delete_streams(redis_url: str, stream_key: str) -> None:
    """Delete the Redis streams of one test deployment."""
    import redis
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{stream_key}*"))
    if keys:
        client.delete(*keys)
    client.close()
