"""Helpers shared by the core test modules (importable by name, unlike conftest)."""

from __future__ import annotations

import time
from pathlib import Path

TESTS = Path(__file__).parent


def wait_for(app, job_ids, statuses=("succeeded", "failed", "cancelled"), timeout=60.0):
    """Poll the database until every job is in one of `statuses`."""
    from sqlalchemy import select

    from conveyor.schema import jobs
    ids = list(job_ids)
    deadline = time.monotonic() + timeout
    while True:
        with app.engine.connect() as conn:
            rows = {r.id: r.status for r in conn.execute(select(jobs.c.id, jobs.c.status).where(jobs.c.id.in_(ids)))}
        if all(rows.get(i) in statuses for i in ids):
            return [app.get(i) for i in ids]
        if time.monotonic() > deadline:
            bad = {i: rows.get(i) for i in ids if rows.get(i) not in statuses}
            raise AssertionError(f"{len(bad)} job(s) not in {statuses} after {timeout}s: {list(bad.items())[:5]}")
        time.sleep(0.05)
