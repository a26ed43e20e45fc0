"""Run dispatcher, scheduler and worker together in one process (``conveyor run``, the demo)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from conveyor.outbox import Dispatcher, FleetDispatcher
from conveyor.scheduler import Scheduler
from conveyor.worker import Worker, WorkerStats

if TYPE_CHECKING:
    from conveyor.app import Conveyor


class Runner:
    """A dispatcher thread, a scheduler thread and a worker in the calling thread."""

    def __init__(self, app: Conveyor, *, concurrency: int | None = None, burst: bool = False,
                 scheduler: bool = True) -> None:
        s = app.settings
        self.app = app
        self.dispatcher: Dispatcher | FleetDispatcher
        if app.tenancy is not None:  # a database per tenant: drain every registered one
            self.dispatcher = FleetDispatcher(app, batch=s.dispatch_batch, maxlen=s.stream_maxlen,
                                              backoff_cap_s=s.dispatch_backoff_max_seconds)
        else:
            self.dispatcher = Dispatcher(app.store, app.queue, batch=s.dispatch_batch, maxlen=s.stream_maxlen,
                                         backoff_cap_s=s.dispatch_backoff_max_seconds)
        self.scheduler = Scheduler(app) if scheduler else None
        self.worker = Worker(app, concurrency=concurrency, burst=False, block_ms=200)
        self.burst = burst
        self._threads: list[threading.Thread] = []

    def start_background(self) -> None:
        """Start the dispatcher and scheduler threads."""
        from conveyor import presence
        presence.register(self.app.engine, f"{self.worker.name}-dispatcher", "dispatcher")
        self._threads = [threading.Thread(target=self.dispatcher.run, name="dispatcher", daemon=True)]
        if self.scheduler is not None:
            self._threads.append(threading.Thread(target=self.scheduler.run, name="scheduler", daemon=True))
        for t in self._threads:
            t.start()

    def run(self, install_signals: bool = True) -> WorkerStats:
        """Run until stopped (or, with burst, until nothing is queued, pending or running)."""
        self.start_background()
        if self.burst:
            threading.Thread(target=self._stop_when_idle, daemon=True).start()
        try:
            return self.worker.run(install_signals=install_signals)
        finally:
            self.stop()

    def _stop_when_idle(self) -> None:
        from sqlalchemy import and_, func, or_, select

        from conveyor.db import utcnow
        from conveyor.schema import jobs
        quiet = 0
        t = self.app.tenancy
        while not self.worker._stopping.is_set():
            now = utcnow()
            open_jobs = 0
            for app in [self.app] if t is None else [a for _, a in t.apps()]:
                with app.engine.connect() as conn:
                    # delayed jobs and jobs waiting out a retry backoff are not work for now
                    open_jobs += conn.execute(select(func.count()).where(
                        or_(jobs.c.status == "running",
                            and_(jobs.c.status == "queued",
                                 or_(jobs.c.next_attempt_at.is_(None), jobs.c.next_attempt_at <= now))))).scalar() \
                        or 0
            quiet = quiet + 1 if not open_jobs and self.worker.in_flight == 0 else 0
            if quiet >= 2:
                self.worker.stop()
                return
            self.worker._stopping.wait(0.1)

    def stop(self) -> None:
        """Stop everything."""
        self.worker.stop()
        self.dispatcher.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        for t in self._threads:
            t.join(timeout=5)
