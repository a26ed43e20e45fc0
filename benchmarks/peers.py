"""Conveyor (PostgreSQL + Redis) against Celery, Dramatiq, RQ and arq on one private Redis.

Every system runs the same no-op job with 4 concurrent slots:
- Conveyor: one `conveyor dispatcher` and one `conveyor worker -c 4` process;
- Celery: `celery worker --pool prefork -c 4`; Dramatiq: 1 process with 4 threads;
- RQ: 4 `rq worker` processes (RQ runs one job per worker, forking per job by default);
- arq: one worker with max_jobs=4.

Two figures per system, workers already running:
- jobs/s: a burst of N jobs enqueued at once, from the first enqueue to the last job's done time
  (read back afterwards, so polling for the end costs the system under test next to nothing);
- p50/p99 submit→done at a fixed offered rate.

A peer's "done" is the time its job appends to a Redis list (one extra LPUSH per job);
Conveyor's is the job row's ``finished_at`` (its finalize transaction). Conveyor's jobs
are durable in PostgreSQL (outbox, events, fencing), the peers' only in Redis.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
PEERS = ("celery", "dramatiq", "rq", "arq")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A throwaway redis-server for the run."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(self.port),
                                      "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                      "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis
        self.client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """Stop the server."""
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)


def _env(extra: dict[str, str], src: Path = SRC) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(src), str(HERE), os.environ.get("PYTHONPATH", "")])
    return env


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def _offered(submit: Callable[[int], None], rate: float, seconds: float) -> int:
    start = time.perf_counter()
    k = 0
    while time.perf_counter() - start < seconds:
        due = start + k / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        submit(k)
        k += 1
    return k


# ---------------------------------------------------------------- peers

def _peer_workers(name: str, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    py = sys.executable
    if name == "celery":
        return [_spawn([py, "-m", "celery", "-A", "peer_tasks:celery_app", "worker", "--pool", "prefork",
                        "-c", "4", "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                        "--without-heartbeat"], env)]
    if name == "dramatiq":
        return [_spawn([py, "-m", "dramatiq", "peer_tasks", "--processes", "1", "--threads", "4"], env)]
    if name == "rq":
        return [_spawn([py, "-m", "rq.cli", "worker", "--url", env["BENCH_REDIS_URL"], "-q", "bench"], env)
                for _ in range(4)]
    if name == "arq":
        return [_spawn([py, "-m", "arq", "peer_tasks.ArqSettings"], env)]
    raise ValueError(name)


def _peer_submitter(name: str, url: str) -> Callable[[str, float], None]:
    os.environ["BENCH_REDIS_URL"] = url
    os.environ["BENCH_PEER"] = name
    sys.path.insert(0, str(HERE))
    import importlib

    import peer_tasks
    mod = importlib.reload(peer_tasks)
    if name == "celery":
        return lambda jid, ts: mod.noop.delay(jid, ts)
    if name == "dramatiq":
        return lambda jid, ts: mod.dnoop.send(jid, ts)
    if name == "rq":
        import redis
        from rq import Queue
        q = Queue("bench", connection=redis.Redis.from_url(url))
        return lambda jid, ts: q.enqueue(mod.rq_noop, jid, ts)
    if name == "arq":
        import asyncio

        from arq import create_pool
        from arq.connections import RedisSettings
        loop = asyncio.new_event_loop()
        pool = loop.run_until_complete(create_pool(RedisSettings.from_dsn(url)))
        return lambda jid, ts: loop.run_until_complete(pool.enqueue_job("arq_noop", jid, ts))
    raise ValueError(name)


def bench_peer(name: str, redis_srv: PrivateRedis, n: int, rate: float, seconds: float) -> dict[str, float]:
    """Throughput and latency of one peer."""
    r = redis_srv.client
    r.flushall()
    env = _env({"BENCH_REDIS_URL": redis_srv.url, "BENCH_PEER": name})
    submit = _peer_submitter(name, redis_srv.url)
    procs = _peer_workers(name, env)
    try:
        def wait_done(count: int, timeout: float = 600) -> None:
            deadline = time.monotonic() + timeout
            while r.llen("bench:done") < count:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name}: only {r.llen('bench:done')}/{count} jobs done")
                time.sleep(0.01)

        submit("warmup", time.time())
        wait_done(1, 120)
        r.delete("bench:done")
        t0 = time.time()
        for i in range(n):
            submit(f"b{i}", time.time())
        wait_done(n)
        # as for Conveyor: the last job's own done time ends the burst, not the poll that notices it
        last = max(float(x.decode().split()[2]) for x in r.lrange("bench:done", 0, -1))
        jobs_s = n / (last - t0)
        r.delete("bench:done")
        k = _offered(lambda i: submit(f"l{i}", time.time()), rate, seconds)
        wait_done(k)
        lat = [(float(done) - float(ts)) * 1000 for _, ts, done in
               (x.decode().split() for x in r.lrange("bench:done", 0, -1))]
    finally:
        _stop(procs)
    return {"jobs_s": jobs_s, "p50_ms": statistics.median(lat), "p99_ms": _pct(lat, 0.99)}


# ---------------------------------------------------------------- Conveyor

def bench_conveyor(db_url: str, redis_srv: PrivateRedis, n: int, rate: float, seconds: float,
                   workdir: Path, src: Path = SRC) -> dict[str, float]:
    """Throughput and latency of Conveyor on PostgreSQL + Redis; the worker and dispatcher run the core in ``src``."""
    from sqlalchemy import func, select

    from conveyor.app import Conveyor
    from conveyor.config import load_settings
    from conveyor.plugins import load_plugins
    from conveyor.schema import jobs
    from conveyor.store import JobSpec

    redis_srv.client.flushall()
    cenv = {"CONVEYOR_DB_URL": db_url, "CONVEYOR_QUEUE_URL": redis_srv.url,
            "CONVEYOR_STREAM_KEY": f"bench:{uuid.uuid4().hex[:8]}", "CONVEYOR_LOG_LEVEL": "ERROR",
            "CONVEYOR_STORAGE_URL": f"file://{workdir}/data", "CONVEYOR_PLUGINS": "conveyor.builtin_kinds"}
    env = _env(cenv, src)
    py = sys.executable
    # the schema as the code under test makes it (a baseline revision may want tables that are a plugin's now)
    subprocess.run([py, "-m", "conveyor", "db", "upgrade"], env=env, cwd=HERE, check=True,
                   stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    app = Conveyor(load_settings(env=cenv), plugins=load_plugins(cenv["CONVEYOR_PLUGINS"]))
    app.init_db()
    procs = [_spawn([py, "-m", "conveyor", "dispatcher"], env),
             _spawn([py, "-m", "conveyor", "worker", "-c", "4"], env)]

    # the schema is this run's alone: a count over it (no list of ids to match) is cheap to poll,
    # and the last finished_at, not the poll that notices it, ends the burst
    def finished() -> tuple[int, Any]:
        with app.engine.connect() as c:
            row = c.execute(select(func.count(), func.max(jobs.c.finished_at))
                            .where(jobs.c.status == "succeeded")).one()
            return int(row[0] or 0), row[1]

    def wait_done(total: int, timeout: float = 600) -> Any:
        deadline = time.monotonic() + timeout
        while (got := finished())[0] < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"conveyor: only {got[0]}/{total} jobs done")
            time.sleep(0.1)
        return got[1]

    try:
        app.submit("conveyor.echo", None)
        wait_done(1, 120)
        t0 = datetime.now(UTC).replace(tzinfo=None)
        for i in range(0, n, 500):  # what a host app submitting a burst would do
            app.submit_many([JobSpec("conveyor.echo", None) for _ in range(i, min(n, i + 500))])
        last = wait_done(1 + n)
        jobs_s = n / (last - t0).total_seconds()
        live: list[str] = []
        _offered(lambda i: live.append(app.submit("conveyor.echo", None)), rate, seconds)
        wait_done(1 + n + len(live))
        with app.engine.connect() as c:
            lat = [(r.finished_at - r.created_at).total_seconds() * 1000 for r in
                   c.execute(select(jobs.c.created_at, jobs.c.finished_at).where(jobs.c.id.in_(live)))]
    finally:
        _stop(procs)
        app.close()
        app.engine.dispose()
    return {"jobs_s": jobs_s, "p50_ms": statistics.median(lat), "p99_ms": _pct(lat, 0.99)}


def run(pg_url: Callable[[], tuple[str, Callable[[], None]]], n: int, rate: float, seconds: float,
        only: list[str] | None = None, rounds: int = 1, baseline: str | None = None) -> dict[str, dict[str, Any]]:
    """Run Conveyor and every installed peer, ``rounds`` times in turn; print medians and Conveyor's ratios.

    ``baseline``: a git revision whose worker and dispatcher run as one more system
    (``conveyor @REV``), from a worktree of it, so a change is measured before and after in one run.
    """
    names = ["conveyor pg+redis"]
    base_src: Path | None = None
    if baseline:
        base_dir = Path(tempfile.mkdtemp(prefix="conveyor-baseline-"))
        subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "--detach", str(base_dir / "tree"),
                        baseline], check=True, capture_output=True)
        base_src = base_dir / "tree" / "src"
        names.append(f"conveyor @{baseline}")
    for name in only or PEERS:
        try:
            __import__(name)
            names.append(name)
        except ImportError:
            print(f"{name}: not installed (pip install -r benchmarks/requirements.txt); skipped", file=sys.stderr)
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in names}
    with tempfile.TemporaryDirectory() as tmp:
        srv = PrivateRedis(Path(tmp))
        try:
            # systems take turns, so a slow spell of a shared machine hits every one of them alike
            for rnd in range(rounds):
                for name in names:
                    print(f"round {rnd + 1}/{rounds}: {name} ...", file=sys.stderr)
                    if name.startswith("conveyor"):
                        url, drop = pg_url()
                        try:
                            src = base_src if name.startswith("conveyor @") and base_src else SRC
                            runs[name].append(bench_conveyor(url, srv, n, rate, seconds, Path(tmp), src))
                        finally:
                            drop()
                    else:
                        runs[name].append(bench_peer(name, srv, n, rate, seconds))
                    r = runs[name][-1]
                    print(f"  {r['jobs_s']:.0f} jobs/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms",
                          file=sys.stderr)
        finally:
            srv.stop()
            if base_src is not None:
                subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force",
                                str(base_src.parent)], capture_output=True)
    results = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
    c = results["conveyor pg+redis"]
    peers = {k: v for k, v in results.items() if not k.startswith("conveyor")}
    print(f"\nno-op jobs, 4 slots, {n} burst jobs, {rate:.0f}/s offered for {seconds:.0f}s, one Redis"
          + (f"; median of {rounds} rounds" if rounds > 1 else ""))
    print(f"{'system':<24}{'jobs/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for k, v in results.items():
        print(f"{k:<24}{v['jobs_s']:>10.0f}{v['p50_ms']:>10.1f}{v['p99_ms']:>10.1f}")
    if baseline:
        b = results[f"conveyor @{baseline}"]
        print(f"\nthis tree / {baseline}: jobs/s {c['jobs_s'] / b['jobs_s']:.2f}x, "
              f"p50 {c['p50_ms'] / b['p50_ms']:.2f}x, p99 {c['p99_ms'] / b['p99_ms']:.2f}x")
    if peers:
        fastest = max(peers, key=lambda k: peers[k]["jobs_s"])
        lowest = min(peers, key=lambda k: peers[k]["p50_ms"])
        print(f"\nConveyor / fastest peer ({fastest}) jobs/s: {c['jobs_s'] / peers[fastest]['jobs_s']:.2f}x; "
              f"p50 / lowest peer ({lowest}): {c['p50_ms'] / peers[lowest]['p50_ms']:.2f}x")
    return results
