"""No-op jobs end to end (submit → final) through real dispatcher and worker processes.

For each database (SQLite file, PostgreSQL on 127.0.0.1) it measures:
- enqueue: jobs/s of `submit_many` (batches of 500) and of one-transaction-per-job `submit`;
- drain: jobs/s of one `conveyor worker --burst -c 4` process over a pre-dispatched backlog;
- latency: p50/p99 submit→final while a dispatcher and a worker run and jobs arrive at a
  fixed offered rate;
- CPU-seconds per 1,000 jobs spent by the worker and dispatcher processes.

    python benchmarks/pipeline.py [--jobs 5000] [--rate 200] [--seconds 10] [--only sqlite|postgresql]

Prints one table and each figure's ratio PostgreSQL / SQLite.

With ``--peers`` it instead runs Conveyor on PostgreSQL + Redis against Celery, Dramatiq,
RQ and arq on one private Redis (see benchmarks/peers.py and benchmarks/requirements.txt),
every system `--rounds` times in turn, and prints the medians. ``--baseline REV`` adds the
worker and dispatcher of a git revision as one more system, for a before/after ratio in
one run (``--peers --peer celery --baseline main``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import select, text

from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.db import make_engine
from conveyor.outbox import Dispatcher, run_until_empty
from conveyor.plugins import load_plugins
from conveyor.schema import jobs
from conveyor.store import JobSpec

PG_URL = os.environ.get("CONVEYOR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    full = {**os.environ, **env}
    return subprocess.Popen([sys.executable, "-m", "conveyor", *args], env=full,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_app(db_url: str, workdir: Path) -> tuple[Conveyor, dict[str, str]]:
    env = {"CONVEYOR_DB_URL": db_url, "CONVEYOR_QUEUE_URL": "sql",
           "CONVEYOR_STORAGE_URL": f"file://{workdir}/data", "CONVEYOR_LOG_LEVEL": "ERROR"}
    app = Conveyor(load_settings(env=env), plugins=load_plugins())
    app.init_db()
    return app, env


def pg_schema_url() -> tuple[str, str]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    eng = make_engine(PG_URL)
    with eng.begin() as c:
        c.execute(text(f"create schema {schema}"))
    eng.dispose()
    return f"{PG_URL}?options=-csearch_path%3D{schema}", schema


def drop_schema(schema: str) -> None:
    eng = make_engine(PG_URL)
    with eng.begin() as c:
        c.execute(text(f"drop schema {schema} cascade"))
    eng.dispose()


def bench_db(name: str, db_url: str, n: int, rate: float, seconds: float, workdir: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    app, env = make_app(db_url, workdir)

    t0 = time.perf_counter()
    for i in range(0, n, 500):
        app.submit_many([JobSpec("conveyor.echo", {"i": j}) for j in range(i, min(n, i + 500))])
    out["enqueue_batch_jobs_s"] = n / (time.perf_counter() - t0)
    single = min(n, 1000)
    t0 = time.perf_counter()
    for i in range(single):
        app.submit("conveyor.echo", {"i": i})
    out["enqueue_single_jobs_s"] = single / (time.perf_counter() - t0)
    total = n + single
    run_until_empty(Dispatcher(app.store, app.queue, batch=1000), timeout_s=600)

    cpu0 = children_cpu()
    t0 = time.perf_counter()
    w = spawn(env, "worker", "--burst", "-c", "4")
    w.wait()
    drain_s = time.perf_counter() - t0
    out["drain_jobs_s"] = total / drain_s
    out["cpu_s_per_1000_drain"] = (children_cpu() - cpu0) / total * 1000

    # latency at a fixed offered rate, dispatcher + worker running
    cpu0 = children_cpu()
    d = spawn(env, "dispatcher")
    w = spawn(env, "worker", "-c", "4")
    time.sleep(1.5)  # let both processes start and connect
    ids = []
    start = time.perf_counter()
    k = 0
    while time.perf_counter() - start < seconds:
        due = start + k / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        ids.append(app.submit("conveyor.echo", {"k": k}))
        k += 1
    deadline = time.time() + 120
    while time.time() < deadline:
        with app.engine.connect() as c:
            left = c.execute(select(jobs.c.id).where(jobs.c.id.in_(ids), jobs.c.status != "succeeded")).first()
        if left is None:
            break
        time.sleep(0.1)
    for p in (w, d):
        p.terminate()
        p.wait()
    with app.engine.connect() as c:
        lat = sorted((r.finished_at - r.created_at).total_seconds() * 1000 for r in
                     c.execute(select(jobs.c.created_at, jobs.c.finished_at).where(jobs.c.id.in_(ids))))
    out["offered_rate"] = rate
    out["p50_ms"] = statistics.median(lat)
    out["p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    out["cpu_s_per_1000_live"] = (children_cpu() - cpu0) / len(ids) * 1000
    app.engine.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=200.0, help="offered jobs/s for the latency run")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--only", choices=["sqlite", "postgresql"])
    ap.add_argument("--peers", action="store_true", help="PostgreSQL + Redis against Celery, Dramatiq, RQ, arq")
    ap.add_argument("--peer", action="append", choices=["celery", "dramatiq", "rq", "arq"],
                    help="with --peers: run only these peers (repeatable)")
    ap.add_argument("--rounds", type=int, default=3, help="with --peers: every system runs this many times, in turn")
    ap.add_argument("--baseline", metavar="REV", help="with --peers: also run the worker and dispatcher of this git "
                                                      "revision (a worktree of it), and print this tree's ratios to it")
    a = ap.parse_args()
    if a.peers:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from peers import run

        def pg() -> tuple[str, object]:
            url, schema = pg_schema_url()
            return url, lambda: drop_schema(schema)
        run(pg, a.jobs, a.rate, a.seconds, only=a.peer, rounds=a.rounds,  # type: ignore[arg-type]
            baseline=a.baseline)
        return
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if a.only in (None, "sqlite"):
            print("sqlite ...", file=sys.stderr)
            results["sqlite"] = bench_db("sqlite", f"sqlite:///{tmp}/bench.db", a.jobs, a.rate, a.seconds,
                                         Path(tmp))
        if a.only in (None, "postgresql"):
            print("postgresql ...", file=sys.stderr)
            url, schema = pg_schema_url()
            try:
                results["postgresql"] = bench_db("postgresql", url, a.jobs, a.rate, a.seconds, Path(tmp))
            finally:
                drop_schema(schema)
    names = list(results)
    keys = list(next(iter(results.values())))
    print(f"\n{'no-op jobs, 4 slots, sql queue':<32}" + "".join(f"{n:>14}" for n in names)
          + ("    pg/sqlite" if len(names) == 2 else ""))
    for k in keys:
        row = f"{k:<32}" + "".join(f"{results[n][k]:>14.1f}" for n in names)
        if len(names) == 2 and results["sqlite"][k]:
            row += f"    {results['postgresql'][k] / results['sqlite'][k]:>8.2f}x"
        print(row)


if __name__ == "__main__":
    main()
