"""The dashboard's first paint with a large job table: server time of every request the jobs page makes.

    python benchmarks/dashboard.py [--jobs 100000] [--rounds 30] [--db postgresql|sqlite]

Seeds ``--jobs`` jobs in one tenant (90 % succeeded, 5 % failed, the rest queued, as a
busy deployment's table looks), starts ``conveyor api`` (the same uvicorn factory
``benchmarks/api.py`` measures), signs in through ``/ui/?token=`` as a browser does, then
requests what opening ``/ui/#/jobs`` requests, in the page's order: the page, its scripts
and style, the session check (who is signed in), the plugins' pages and the first page of jobs.
Each is timed over loopback, ``--rounds`` times; the table shows p50 and p99 per request
and for the whole first paint (their sum). The goal is a first paint under 300 ms.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src"), str(HERE)]

from api import TENANT, Server, database  # noqa: E402

GOAL_MS = 300.0
PAINT = [("page", "/ui/"), ("script", "/ui/static/ui.js"), ("kit", "/ui/static/kit.js"),
         ("style", "/ui/static/ui.css"), ("session", "/ui/session"), ("pages", "/ui/pages"),
         ("jobs page", "/api/v1/jobs?limit=50")]


def pct(values: list[float], q: float) -> float:
    """The q-th percentile of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] if ordered else 0.0


def seed(env: dict[str, str], n: int) -> None:
    """``n`` jobs of the bench tenant, most of them finished."""
    from sqlalchemy import text

    from conveyor.app import Conveyor
    from conveyor.config import load_settings
    from conveyor.store import JobSpec

    app = Conveyor(load_settings(env=env))
    app.init_db()
    t0 = time.perf_counter()
    for i in range(0, n, 1000):
        app.submit_many([JobSpec("conveyor.echo", {"n": j}, tenant=TENANT) for j in range(i, min(n, i + 1000))])
        if i and i % 20000 == 0:
            print(f"  {i} jobs ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    pick = "random()" if app.engine.dialect.name == "postgresql" else "(abs(random()) % 1000000) / 1000000.0"
    with app.engine.begin() as c:
        c.execute(text(f"UPDATE conveyor_jobs SET status = CASE WHEN r < 0.90 THEN 'succeeded' WHEN r < 0.95 "
                       f"THEN 'failed' ELSE status END, finished_at = CASE WHEN r < 0.95 THEN updated_at END "
                       f"FROM (SELECT id AS rid, {pick} AS r FROM conveyor_jobs) AS x WHERE id = x.rid"))
        c.execute(text("DELETE FROM conveyor_outbox"))
    if app.engine.dialect.name == "postgresql":
        with app.engine.connect() as c:
            c.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE conveyor_jobs"))
    app.close()
    app.engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    a = ap.parse_args()
    import httpx

    from conveyor.api.auth import mint_token
    secret = uuid.uuid4().hex + uuid.uuid4().hex
    token = mint_token(secret, "bench", tenant=TENANT, ttl_s=24 * 3600)
    with tempfile.TemporaryDirectory() as tmpdir, database(a.db, Path(tmpdir)) as url:
        env = {"CONVEYOR_DB_URL": url, "CONVEYOR_QUEUE_URL": "sql", "CONVEYOR_STORAGE_URL": f"file://{tmpdir}/data",
               "CONVEYOR_JWT_SECRET": secret, "CONVEYOR_LOG_LEVEL": "WARNING"}
        print(f"seeding {a.jobs} jobs ({a.db}) ...", file=sys.stderr)
        seed(env, a.jobs)
        server = Server("conveyor", "conveyor.api.app:from_environment", env, 1, Path(tmpdir))
        try:
            with httpx.Client(base_url=server.base, timeout=30) as browser:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if browser.get("/ui/", params={"token": token}).status_code == 303:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit(f"the server did not come up:\n{server.log.read_text()[-2000:]}")
                    time.sleep(0.2)
                took: dict[str, list[float]] = {name: [] for name, _ in PAINT}
                totals: list[float] = []
                for r in range(a.rounds + 3):
                    total = 0.0
                    for name, path in PAINT:
                        t0 = time.perf_counter()
                        resp = browser.get(path)
                        ms = (time.perf_counter() - t0) * 1000
                        if resp.status_code != 200:
                            raise SystemExit(f"{path}: {resp.status_code} {resp.text[:300]}")
                        if r >= 3:  # the first rounds warm the server's caches and pool
                            took[name].append(ms)
                        total += ms
                    if r >= 3:
                        totals.append(total)
                rows = browser.get("/api/v1/jobs?limit=50").json()["items"]
        finally:
            server.stop()
    print(f"\ndashboard first paint, {a.jobs} jobs in the tenant ({a.db}), {a.rounds} rounds over loopback")
    print(f"{'request':<12} {'p50 ms':>8} {'p99 ms':>8}")
    for name, _ in PAINT:
        print(f"{name:<12} {pct(took[name], 50):8.2f} {pct(took[name], 99):8.2f}")
    p50, p99 = pct(totals, 50), pct(totals, 99)
    print(f"{'first paint':<12} {p50:8.2f} {p99:8.2f}")
    print(f"goal: under {GOAL_MS:.0f} ms: p50 is {p50 / GOAL_MS:.2f}x the goal, p99 {p99 / GOAL_MS:.2f}x "
          f"({'met' if p99 < GOAL_MS else 'NOT met'}); the page listed {len(rows)} jobs")


if __name__ == "__main__":
    main()
