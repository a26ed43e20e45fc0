"""Helpers of the CAD tests: a dispatcher + worker in threads, waiting for jobs."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select

from conveyor.outbox import Dispatcher
from conveyor.schema import jobs
from conveyor.worker import Worker

FINAL = ("succeeded", "failed", "cancelled")


def wait_jobs(app, job_ids, timeout=120.0):
    """Poll until every job is final; returns the jobs."""
    ids = list(job_ids)
    deadline = time.monotonic() + timeout
    while True:
        with app.engine.connect() as conn:
            rows = {r.id: r.status for r in conn.execute(select(jobs.c.id, jobs.c.status).where(jobs.c.id.in_(ids)))}
        if all(rows.get(i) in FINAL for i in ids):
            return [app.get(i) for i in ids]
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs not final after {timeout}s: {rows}")
        time.sleep(0.05)


class CadPipeline:
    """A dispatcher and a worker running in threads of the test process."""

    def __init__(self, app, concurrency=2):
        self.app = app
        self.dispatcher = Dispatcher(app.engine, app.queue, batch=100)
        self.worker = Worker(app, concurrency=concurrency, block_ms=100)
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

    def wait(self, job_ids, timeout=120.0):
        return wait_jobs(self.app, job_ids, timeout)
