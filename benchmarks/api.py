"""The HTTP API against a plain FastAPI floor: requests/s and p50/p99 latency of
``POST /api/v1/jobs`` and ``GET /api/v1/jobs/{id}``, side by side in one run.

    python benchmarks/api.py [--rounds 3] [--seconds 5] [--connections 16] [--workers 1]
                             [--db postgresql|sqlite] [--load auto|wrk|httpx] [--only submit|read]
                             [--also NAME=MODULE:FACTORY ...] [--profile DIR]

The floor is the least a FastAPI endpoint on the same stack can do for the same request:
``POST /floor/jobs`` parses the body into a pydantic model, checks the bearer token and
inserts one row; ``GET /floor/jobs/{id}`` checks the token and selects one row by primary
key (and tenant). What makes the comparison fair:

- the same server: each system is its own ``python -m uvicorn --factory`` subprocess with
  identical flags (``--workers`` N, default 1, ``--log-level warning``), the same
  interpreter and packages; Conveyor's is ``conveyor.api.app:from_environment``, what
  ``conveyor api --workers N`` runs;
- the same database and pool: one private PostgreSQL schema (or one SQLite file) holds
  both systems' tables, and the floor's engine comes from ``conveyor.db.make_engine``,
  so its pool (size, overflow, LIFO) is Conveyor's;
- the same transaction handling as Conveyor's path for the statement: on PostgreSQL the
  floor's insert is one statement on an autocommit connection (as ``store._fast_tx``
  runs a submit), its read a plain ``engine.connect()`` (as ``store._read``); on SQLite a
  ``BEGIN IMMEDIATE`` transaction for the write, as Conveyor's;
- the same body and the same token: both get ``{"kind": "conveyor.echo", "payload": {...}}``
  and the same HS256 JWT, and both verify it with PyJWT (signature, ``exp``, ``sub``); the
  floor does it in an ``async def`` dependency and runs its endpoint in the thread pool, as
  a plain FastAPI application would;
- a comparable row and answer: the floor's table has ``conveyor_jobs``'s columns (only a
  primary key), its insert fills the same fields, and both answer the whole row as JSON
  (timestamps as ISO text); the ids read are the same finished jobs in both tables (the
  seeded jobs ran through a real dispatcher and worker, so Conveyor's read also returns
  their four events, as it would in production);
- the same load: one ``wrk`` process (``-t1``, or an httpx client pool in a separate
  process) over loopback with ``--connections`` keep-alive connections for ``--seconds``
  per run; the servers take turns (the order rotating every round), ``--rounds`` times,
  and the table shows medians. Every server stays up all along (an idle one costs
  nothing), so each run meets a warm server. Prefer wrk: the httpx client is Python and
  takes CPU from the servers on a small machine, which narrows the gap between them.

What stays different is what Conveyor is for: a submit also writes an outbox row and a
``submitted`` event (one statement on PostgreSQL, with a NOTIFY), checks the job's
bounds and the body's nesting, and counts the request in its metrics; a read also reads
the job's change log (in the same statement). The goal is that this costs at most 20 %: Conveyor at
0.8x the floor's requests/s or better.

Besides req/s and latency the table shows CPU per request: the server process tree's,
and PostgreSQL's (the ``postgres`` processes alive before and after the run, so other work
on the same server shows up there). With one worker a server is bound by its GIL, so its
CPU per request is what sets its requests/s.

``--also NAME=MODULE:FACTORY`` adds a system to the rotation: Conveyor's API built by
another factory (a patched or older build on ``PYTHONPATH``), for before/after in one run.
``--profile DIR`` then samples the thread holding each server's GIL with py-spy
(``pip install py-spy``) under each endpoint's load, as collapsed stacks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import jwt
from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictInt

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
PG_URL = os.environ.get("CONVEYOR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PREFIX = "/api/v1"
FLOOR_TABLE = "bench_floor_jobs"
TENANT = "bench"
BODY = {"kind": "conveyor.echo", "payload": {"hello": "world", "n": 1, "tags": ["a", "b"]}}
GOAL = 0.8
TICK = os.sysconf("SC_CLK_TCK")
ENDPOINTS = ("submit", "read")


# ---------------------------------------------------------------- the floor (runs in its uvicorn process)

class FloorJobIn(BaseModel):
    """The floor's body: the fields of Conveyor's ``JobIn`` that the benchmark sends, with the same checks."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    payload: Any = None
    priority: StrictInt = 0


_floor_secret = b""


async def floor_caller(authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    """The floor's bearer check: the same PyJWT verification of the same HS256 token as Conveyor's."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "no bearer token")
    try:
        return dict(jwt.decode(token, _floor_secret, algorithms=["HS256"], leeway=5,
                               options={"require": ["exp", "sub"]}))
    except jwt.InvalidTokenError:
        raise HTTPException(401, "invalid token") from None


def floor_app() -> FastAPI:
    """The floor's FastAPI application (``uvicorn --factory api:floor_app``), configured from the environment."""
    from sqlalchemy import insert, select

    from conveyor.db import make_engine

    global _floor_secret
    _floor_secret = os.environ["CONVEYOR_JWT_SECRET"].encode()
    engine = make_engine(os.environ["CONVEYOR_DB_URL"])  # Conveyor's pool settings
    table = floor_table()
    postgres = engine.dialect.name == "postgresql"
    api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    def iso(v: Any) -> Any:
        return v.isoformat(timespec="milliseconds") + "Z" if isinstance(v, datetime) else v

    @api.post("/floor/jobs", status_code=201, response_model=None)
    def create(body: FloorJobIn, claims: Annotated[dict[str, Any], Depends(floor_caller)]) -> dict[str, Any]:
        now = datetime.now(UTC).replace(tzinfo=None)
        row = {c.name: None for c in table.c}
        row.update(id=str(uuid.uuid4()), kind=body.kind, tenant_id=claims.get("tenant") or "default",
                   status="queued", priority=body.priority, payload=body.payload, error_history=[], attempt_id=0,
                   attempts=0, max_attempts=3, trace_id=uuid.uuid4().hex, created_at=now, updated_at=now)
        if postgres:
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(insert(table), row)
        else:
            with engine.begin() as conn:
                conn.execute(insert(table), row)
        return {k: iso(v) for k, v in row.items()}

    @api.get("/floor/jobs/{job_id}", response_model=None)
    def read(job_id: str, claims: Annotated[dict[str, Any], Depends(floor_caller)]) -> dict[str, Any]:
        with engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.id == job_id,
                                                   table.c.tenant_id == (claims.get("tenant") or "default"))
                               ).mappings().first()
        if row is None:
            raise HTTPException(404, "no such job")
        return {k: iso(v) for k, v in row.items()}

    return api


def floor_table(metadata: Any = None) -> Any:
    """The floor's table: ``conveyor_jobs``'s columns, a primary key and no other index."""
    from sqlalchemy import Column, MetaData, Table

    from conveyor.schema import jobs
    return Table(FLOOR_TABLE, metadata if metadata is not None else MetaData(),
                 *(Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable) for c in jobs.c))


# ---------------------------------------------------------------- database and seed

def pg_schema() -> tuple[str, str]:
    """A private schema of the PostgreSQL database and a URL whose search_path is it."""
    from sqlalchemy import text

    from conveyor.db import make_engine
    schema = f"bench_api_{uuid.uuid4().hex[:8]}"
    eng = make_engine(PG_URL)
    with eng.begin() as c:
        c.execute(text(f"create schema {schema}"))
    eng.dispose()
    return f"{PG_URL}?options=-csearch_path%3D{schema}", schema


def drop_schema(schema: str) -> None:
    """Drop the private schema and everything in it."""
    from sqlalchemy import text

    from conveyor.db import make_engine
    eng = make_engine(PG_URL)
    with eng.begin() as c:
        c.execute(text(f"drop schema if exists {schema} cascade"))
    eng.dispose()


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    return env


def seed(env: dict[str, str], n: int) -> list[str]:
    """``n`` finished jobs of the bench tenant (submitted, dispatched, run by a worker), copied to the floor table."""
    from sqlalchemy import MetaData, func, insert, select

    from conveyor.app import Conveyor
    from conveyor.config import load_settings
    from conveyor.outbox import Dispatcher, run_until_empty
    from conveyor.schema import jobs
    from conveyor.store import JobSpec

    app = Conveyor(load_settings(env=env))
    app.init_db()
    md = MetaData()
    floor = floor_table(md)
    md.create_all(app.engine)
    ids: list[str] = []
    for i in range(0, n, 500):
        ids += app.submit_many([JobSpec(BODY["kind"], {**BODY["payload"], "n": j}, tenant=TENANT)
                                for j in range(i, min(n, i + 500))])
    run_until_empty(Dispatcher(app.store, app.queue, batch=1000), timeout_s=600)
    worker = subprocess.run([sys.executable, "-m", "conveyor", "worker", "--burst", "-c", "4"], env=_env(env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    with app.engine.begin() as c:
        done = c.execute(select(func.count()).select_from(jobs).where(jobs.c.status == "succeeded")).scalar()
        if done != n:
            raise SystemExit(f"seeding: {done} of {n} jobs succeeded; the worker said:\n"
                             f"{worker.stderr.decode(errors='replace')[-2000:]}")
        c.execute(insert(floor).from_select([col.name for col in floor.c], select(*jobs.c)))
    app.engine.dispose()
    app.close()
    return ids


# ---------------------------------------------------------------- servers

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One system's uvicorn subprocess."""

    def __init__(self, name: str, target: str, env: dict[str, str], workers: int, logdir: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = logdir / f"{name}.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", target, "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", str(workers), "--log-level", "warning", "--app-dir", str(HERE)],
            env=_env(env), cwd=HERE, stdout=subprocess.DEVNULL, stderr=self._log)

    def paths(self) -> tuple[str, str]:
        """The submit path and the read path's prefix."""
        return ("/floor/jobs", "/floor/jobs/") if self.name == "floor" else (f"{PREFIX}/jobs", f"{PREFIX}/jobs/")

    def wait_ready(self, token: str, job_id: str, timeout: float = 60.0) -> None:
        """Until a read and a submit answer as they should (else exit with the server's log)."""
        import httpx
        deadline = time.monotonic() + timeout
        submit, read = self.paths()
        headers = {"Authorization": f"Bearer {token}"}
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} server exited:\n{self.log.read_text(errors='replace')[-3000:]}")
            try:
                r = httpx.get(self.base + read + job_id, headers=headers, timeout=5)
                w = httpx.post(self.base + submit, json=BODY, headers=headers, timeout=5)
                if r.status_code == 200 and w.status_code == 201:
                    return
                problem = f"read {r.status_code} {r.text[:300]}; submit {w.status_code} {w.text[:300]}"
            except httpx.HTTPError as exc:
                problem = repr(exc)
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name} server not ready: {problem}\n"
                                 f"{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


# ---------------------------------------------------------------- CPU accounting from /proc

def _stats() -> dict[int, tuple[int, str, float]]:
    """pid → (ppid, comm, CPU seconds) of every process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            raw = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2:].split()
        out[int(d)] = (int(rest[1]), comm, (int(rest[11]) + int(rest[12])) / TICK)
    return out


def cpu_snapshot(root: int) -> tuple[float, dict[int, float]]:
    """CPU seconds so far of ``root`` and its descendants, and of each postgres process."""
    stats = _stats()
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, (ppid, _, _) in stats.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    server = sum(stats[p][2] for p in tree if p in stats)
    return server, {pid: cpu for pid, (_, comm, cpu) in stats.items() if comm == "postgres"}


def pg_cpu(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds postgres processes spent between two snapshots (those alive at both)."""
    return sum(after[p] - before[p] for p in before.keys() & after.keys())


# ---------------------------------------------------------------- load

WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\nRESULT {"requests": %.0f, "seconds": %.6f, "p50_ms": %.3f, "p99_ms": %.3f, '
    .. '"errors": %.0f, "bad_status": %.0f}\\n', summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def wrk_script(path: Path, token: str, method: str, ids_file: Path | None, read_prefix: str) -> None:
    """A wrk Lua script: the method, headers and body, a round-robin over the ids for reads, a JSON summary."""
    lines = [f'wrk.method = "{method}"', f'wrk.headers["Authorization"] = "Bearer {token}"']
    if method == "POST":
        lines += ['wrk.headers["Content-Type"] = "application/json"', f"wrk.body = [[{json.dumps(BODY)}]]"]
    else:
        lines += ["local ids = {}", f'for line in io.lines("{ids_file}") do ids[#ids + 1] = line end',
                  "local i = 0",
                  "request = function()",
                  "  i = i + 1",
                  f'  return wrk.format(nil, "{read_prefix}" .. ids[(i % #ids) + 1])',
                  "end"]
    path.write_text("\n".join(lines) + WRK_DONE)


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, float]:
    """One wrk run (one thread, ``connections`` connections); its summary."""
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
                          "-s", str(script), url], capture_output=True, text=True, timeout=seconds + 120)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT "):]))
    raise SystemExit(f"wrk gave no result:\n{out.stdout}\n{out.stderr}")


def drive_httpx(spec: dict[str, Any]) -> dict[str, float]:
    """The httpx load generator (``--drive``, in its own process): a pool of concurrent clients for a fixed time."""
    import asyncio

    import httpx

    async def go() -> dict[str, float]:
        n = spec["connections"]
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        latencies: list[float] = []
        counts = {"errors": 0, "bad_status": 0}
        body = json.dumps(BODY).encode()
        ids = spec.get("ids") or []
        async with httpx.AsyncClient(base_url=spec["base"], limits=limits, timeout=30,
                                     headers={"Authorization": f"Bearer {spec['token']}",
                                              "Content-Type": "application/json"}) as client:
            start = time.perf_counter()
            deadline = start + spec["seconds"]

            async def one(k: int) -> None:
                i = k
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    try:
                        if spec["method"] == "POST":
                            r = await client.post(spec["path"], content=body)
                        else:
                            r = await client.get(spec["path"] + ids[i % len(ids)])
                    except httpx.HTTPError:
                        counts["errors"] += 1
                        continue
                    latencies.append(time.perf_counter() - t0)
                    if r.status_code >= 400:
                        counts["bad_status"] += 1
                    i += n

            await asyncio.gather(*(one(k) for k in range(n)))
            elapsed = time.perf_counter() - start
        latencies.sort()
        return {"requests": len(latencies), "seconds": elapsed, "p50_ms": pct(latencies, 0.5) * 1000,
                "p99_ms": pct(latencies, 0.99) * 1000, **counts}

    return asyncio.run(go())


def run_httpx(base: str, path: str, method: str, token: str, ids: list[str], connections: int,
              seconds: float) -> dict[str, float]:
    """One httpx run in a separate process."""
    spec = {"base": base, "path": path, "method": method, "token": token, "ids": ids, "connections": connections,
            "seconds": seconds}
    out = subprocess.run([sys.executable, __file__, "--drive", json.dumps(spec)], capture_output=True, text=True,
                         env=_env({}), timeout=seconds + 120)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT "):]))
    raise SystemExit(f"the httpx load generator gave no result:\n{out.stdout}\n{out.stderr}")


def pct(values: list[float], q: float) -> float:
    """The q-quantile of sorted values (0 when empty)."""
    return values[min(len(values) - 1, int(len(values) * q))] if values else 0.0


# ---------------------------------------------------------------- the run

@contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    """A scratch database URL: a private PostgreSQL schema (dropped after) or a SQLite file."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp}/bench.db"
        return
    url, schema = pg_schema()
    try:
        yield url
    finally:
        drop_schema(schema)


def measure(server: Server, endpoint: str, a: argparse.Namespace, token: str, ids: list[str],
            scripts: dict[tuple[str, str], Path], seconds: float) -> dict[str, float]:
    """One run of one endpoint against one server: req/s, latencies, CPU per request."""
    submit, read = server.paths()
    cpu0 = cpu_snapshot(server.proc.pid)
    if a.load == "wrk":
        res = run_wrk(server.base + (submit if endpoint == "submit" else read + ids[0]),
                      scripts[server.name, endpoint], a.connections, seconds)
    else:
        res = run_httpx(server.base, submit if endpoint == "submit" else read,
                        "POST" if endpoint == "submit" else "GET", token, ids, a.connections, seconds)
    cpu1 = cpu_snapshot(server.proc.pid)
    n = max(1, res["requests"])
    return {"rps": res["requests"] / res["seconds"], "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"],
            "server_cpu_ms": (cpu1[0] - cpu0[0]) / n * 1000, "pg_cpu_ms": pg_cpu(cpu0[1], cpu1[1]) / n * 1000,
            "failed": res["errors"] + res["bad_status"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="every system runs every endpoint this many times, in turn")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of one run")
    ap.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections of the load")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of each server")
    ap.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    ap.add_argument("--load", choices=["auto", "wrk", "httpx"], default="auto",
                    help="load generator: wrk if installed (auto), else httpx in a separate process")
    ap.add_argument("--only", choices=list(ENDPOINTS), help="measure one endpoint")
    ap.add_argument("--seed", type=int, default=1000, help="finished jobs to read")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load per server and endpoint")
    ap.add_argument("--profile", metavar="DIR",
                    help="after the rounds, sample each server's GIL holder with py-spy for --seconds under each "
                         "endpoint's load; collapsed stacks go to DIR/<system>-<endpoint>.txt")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=MODULE:FACTORY",
                    help="one more system in the rotation: Conveyor's API from another application factory (e.g. a "
                         "patched build; put its directory on PYTHONPATH), for before/after in one run; every "
                         "server keeps its pool's connections, so mind PostgreSQL's max_connections")
    ap.add_argument("--drive", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.drive:
        print("RESULT " + json.dumps(drive_httpx(json.loads(a.drive))), flush=True)
        return
    if a.load == "auto":
        a.load = "wrk" if shutil.which("wrk") else "httpx"
    if a.load == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk), use --load httpx")
    sys.path[:0] = [str(SRC)]
    from conveyor.api.auth import mint_token

    endpoints = [a.only] if a.only else list(ENDPOINTS)
    secret = uuid.uuid4().hex + uuid.uuid4().hex
    token = mint_token(secret, "bench", tenant=TENANT, ttl_s=24 * 3600)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        with database(a.db, tmp) as url:
            env = {"CONVEYOR_DB_URL": url, "CONVEYOR_QUEUE_URL": "sql", "CONVEYOR_STORAGE_URL": f"file://{tmp}/data",
                   "CONVEYOR_JWT_SECRET": secret, "CONVEYOR_LOG_LEVEL": "WARNING"}
            print(f"seeding {a.seed} finished jobs ({a.db}) ...", file=sys.stderr)
            ids = seed(env, a.seed)
            random.Random(7).shuffle(ids)
            ids_file = tmp / "ids.txt"
            ids_file.write_text("\n".join(ids) + "\n")
            targets = {"conveyor": "conveyor.api.app:from_environment", "floor": "api:floor_app",
                       **dict(x.split("=", 1) for x in a.also)}
            servers = {name: Server(name, target, env, a.workers, tmp) for name, target in targets.items()}
            systems = tuple(servers)
            try:
                scripts = {}
                for s in servers.values():
                    s.wait_ready(token, ids[0])
                    for e in ENDPOINTS:
                        scripts[s.name, e] = tmp / f"{s.name}-{e}.lua"
                        wrk_script(scripts[s.name, e], token, "POST" if e == "submit" else "GET", ids_file,
                                   s.paths()[1])
                print(f"load: {a.load}, {a.connections} connections; {a.workers} uvicorn worker(s) per server; "
                      f"{a.rounds} rounds of {a.seconds:g} s", file=sys.stderr)
                for e in endpoints:
                    for s in servers.values():
                        measure(s, e, a, token, ids, scripts, a.warmup)
                runs: dict[tuple[str, str], list[dict[str, float]]] = {(s, e): [] for s in systems for e in endpoints}
                for r in range(a.rounds):
                    k = r % len(systems)
                    order = systems[k:] + systems[:k]
                    for e in endpoints:
                        for name in order:
                            m = measure(servers[name], e, a, token, ids, scripts, a.seconds)
                            runs[name, e].append(m)
                            print(f"round {r + 1} {e:<6} {name:<8} {m['rps']:8.0f} req/s  p50 {m['p50_ms']:6.2f} ms  "
                                  f"p99 {m['p99_ms']:6.2f} ms" + (f"  {m['failed']:.0f} FAILED" if m["failed"] else ""),
                                  file=sys.stderr)
                if a.profile:
                    profile(servers, endpoints, a, token, ids, scripts)
            finally:
                for s in servers.values():
                    s.stop()
    if a.rounds:
        report(runs, systems, endpoints, a)


def profile(servers: dict[str, Server], endpoints: list[str], a: argparse.Namespace, token: str, ids: list[str],
            scripts: dict[tuple[str, str], Path]) -> None:
    """py-spy samples of the thread holding the GIL in each server (and its workers) while one endpoint's load runs.

    A server with one worker is bound by its GIL, so these samples are where its
    requests' time goes; ``<system>-<endpoint>.json`` has the sampling rate and the
    requests served, to turn samples into milliseconds per request.
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = Path(a.profile)
    out.mkdir(parents=True, exist_ok=True)
    rate = 200
    for e in endpoints:
        for s in servers.values():
            path = out / f"{s.name}-{e}.txt"
            rec = subprocess.Popen([spy, "record", "--pid", str(s.proc.pid), "--subprocesses", "--gil", "--nonblocking",
                                    "--rate", str(rate), "--format", "raw", "--output", str(path),
                                    "--duration", str(round(a.seconds) + 3)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(1.0)  # py-spy attaches
            m = measure(s, e, a, token, ids, scripts, a.seconds)
            _, err = rec.communicate(timeout=a.seconds + 60)
            (out / f"{s.name}-{e}.json").write_text(json.dumps({"rate": rate, "requests": m["rps"] * a.seconds,
                                                                 **m}))
            print(f"profile {e:<6} {s.name:<8} {m['rps']:8.0f} req/s under py-spy -> {path}"
                  + ("" if rec.returncode == 0 else f" (py-spy: {err.decode(errors='replace')[-300:]})"),
                  file=sys.stderr)


def report(runs: dict[tuple[str, str], list[dict[str, float]]], systems: tuple[str, ...], endpoints: list[str],
           a: argparse.Namespace) -> None:
    """The table of medians and the ratios."""
    med = {k: {f: statistics.median(m[f] for m in v) for f in v[0]} for k, v in runs.items()}
    fails = {k: sum(m["failed"] for m in v) for k, v in runs.items()}
    label = {"submit": "POST /jobs", "read": "GET /jobs/{id}"}
    print(f"\n{a.db}, {a.load} -c{a.connections}, {a.workers} worker(s), median of {a.rounds} x {a.seconds:g} s")
    w = max(len(label[e]) + len(s) for e in endpoints for s in systems) + 3
    print(f"{'':<{w}}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'server CPU':>13}{'pg CPU':>10}{'failed':>8}")
    print(f"{'':<{w}}{'':>9}{'':>9}{'':>9}{'ms/req':>13}{'ms/req':>10}")
    for e in endpoints:
        for s in systems:
            m = med[s, e]
            print(f"{label[e] + ' ' + s:<{w}}{m['rps']:>9.0f}{m['p50_ms']:>9.2f}{m['p99_ms']:>9.2f}"
                  f"{m['server_cpu_ms']:>13.2f}{m['pg_cpu_ms']:>10.2f}{fails[s, e]:>8.0f}")
    print()
    for e in endpoints:
        f = med["floor", e]
        for s in (x for x in systems if x != "floor"):
            c = med[s, e]
            ratio = c["rps"] / f["rps"] if f["rps"] else float("nan")
            verdict = "met" if ratio >= GOAL else "NOT met"
            print(f"{label[e]:<16} {s}/floor: req/s {ratio:.2f}x (goal >= {GOAL:.1f}x: {verdict}), "
                  f"p50 {c['p50_ms'] / f['p50_ms']:.2f}x, p99 {c['p99_ms'] / f['p99_ms']:.2f}x, "
                  f"server CPU/req {c['server_cpu_ms'] / f['server_cpu_ms']:.2f}x")


if __name__ == "__main__":
    main()
