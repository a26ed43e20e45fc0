"""Helpers shared by the core test modules (importable by name, unlike conftest)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from conveyor.outbox import Dispatcher
from conveyor.worker import Worker

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


class Pipeline:
    """A dispatcher and a worker running in threads of the test process."""

    def __init__(self, app, concurrency=4, **worker_kw):
        self.app = app
        self.dispatcher = Dispatcher(app.store, app.queue, batch=200)
        self.worker = Worker(app, concurrency=concurrency, block_ms=100, **worker_kw)
        self._threads = [threading.Thread(target=self.dispatcher.run, daemon=True),
                         threading.Thread(target=self.worker.run, kwargs={"install_signals": False}, daemon=True)]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.worker.stop()
        self.dispatcher.stop()
        for t in self._threads:
            t.join(timeout=30)

    def wait(self, job_ids, statuses=("succeeded", "failed", "cancelled"), timeout=60.0):
        """Wait until every job is in one of `statuses`; returns the jobs."""
        return wait_for(self.app, job_ids, statuses, timeout)


def box_pids() -> list[int]:
    """Processes running as a sandbox uid: what boxes run on this host."""
    from conveyor_sandbox.common import BOX_UID_BASE, BOX_UID_COUNT
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            uid = next((int(x.split()[1]) for x in status.splitlines() if x.startswith("Uid:")), -1)
            if BOX_UID_BASE <= uid < BOX_UID_BASE + BOX_UID_COUNT:
                found.append(int(entry))
    return found
