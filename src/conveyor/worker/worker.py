"""``Worker``: the parts of ``conveyor.worker`` put together, started and stopped."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from conveyor import presence, store
from conveyor.errors import ConfigError
from conveyor.kinds import CancelToken, JobKind
from conveyor.worker.attempt import abandoned_outcome, run_attempt
from conveyor.worker.committer import Committer
from conveyor.worker.held import Held, HeldJobs, WorkerStats, by_app
from conveyor.worker.leases import LeaseKeeper
from conveyor.worker.middleware import DEFAULT_MIDDLEWARE, Middleware
from conveyor.worker.readers import choose_reader
from conveyor.worker.slots import SlotPool

if TYPE_CHECKING:
    from conveyor.app import Conveyor

log = logging.getLogger("conveyor.worker")


class Worker:
    """Runs jobs from the queue until stopped (or, with ``burst``, until no work is left)."""

    def __init__(self, app: Conveyor, *, concurrency: int | None = None, name: str | None = None,
                 burst: bool = False, block_ms: int = 1000, reclaim_interval_s: float | None = None,
                 shutdown_grace_s: float = 30.0, on_finalized: Callable[[store.Finalized], None] | None = None,
                 burst_give_up_s: float = 10.0, middleware: Sequence[Middleware] = DEFAULT_MIDDLEWARE) -> None:
        s = app.settings
        self.app = app
        self.slots = max(1, concurrency or s.concurrency)
        self.name = name or s.consumer_name
        self.burst = burst
        self.shutdown_grace_s = shutdown_grace_s
        #: the chain every handler call goes through, outermost first
        self.middleware = tuple(middleware)
        self.stats = WorkerStats()
        tenancy = app.tenancy
        if tenancy is not None and app.queue.transactional:
            raise ConfigError("a worker serving many tenant databases needs a queue outside them "
                              "(redis://, or the sql queue of the control database)")
        self._stopping = threading.Event()
        self._done = threading.Event()
        self.held = HeldJobs(self.slots, max_held=4 * self.slots)
        # on PostgreSQL with a queue outside the database, a claim also commits what finished meanwhile
        combine = app.store.claim_commits_outcomes and not app.queue.transactional and tenancy is None
        self.committer = Committer(app, self.held, self.stats, self._done, combine=combine, tenancy=tenancy,
                                   on_finalized=on_finalized)
        self.leases = LeaseKeeper(app, self.name, self.held, self._done, tenancy=tenancy, abandon=self._abandon)
        self.pool = SlotPool(self.name, self.held, self._execute)
        self.reader = choose_reader(app)(
            app, self.name, self.held, self.committer, self.stats, self._stopping, self._start, burst=burst,
            block_ms=block_ms, reclaim_interval_s=reclaim_interval_s or max(0.5, min(10.0, s.lease_seconds / 2)),
            burst_give_up_s=burst_give_up_s)
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------ public

    def run(self, install_signals: bool = True) -> WorkerStats:
        """Block until stopped; returns the counters."""
        presence.register(self.app.engine, self.name, "worker", self.slots)
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        self._threads = [threading.Thread(target=self.leases.loop, name=f"{self.name}-heartbeat", daemon=True),
                         threading.Thread(target=self.committer.loop, name=f"{self.name}-finalizer", daemon=True)]
        for t in self._threads:
            t.start()
        self.pool.start(self.slots)
        log.info("worker started name=%s slots=%d queue=%s reader=%s", self.name, self.slots,
                 self.app.settings.queue_url, type(self.reader).__name__)
        try:
            self.reader.run()
        finally:
            self.committer.set_cycling(False)
            self._shutdown()
        return self.stats

    def stop(self) -> None:
        """Stop reading; running jobs finish within the grace period, the rest are released."""
        self._stopping.set()
        self.held.wake_all()

    @property
    def in_flight(self) -> int:
        """Jobs held right now."""
        return len(self.held)

    # ------------------------------------------------------------ an attempt's life

    def _start(self, c: store.Claimed, app: Conveyor | None = None) -> None:
        """Hold a claimed attempt and queue it for a slot."""
        kind: JobKind | None = self.app.kinds.get(c.job.kind)
        timeout = kind.timeout_s if kind else None
        held = Held(c, CancelToken(), time.monotonic() + timeout if timeout else None, app or self.app)
        held.token.on_cancel(lambda _reason: held.extra.setdefault("stop_at", time.monotonic()))
        self.held.add(held)
        self.pool.submit(held, kind)

    def _execute(self, held: Held, kind: JobKind | None) -> None:
        """In a slot thread: run the attempt and hand its outcome to the committer."""
        self.committer.attempt_ended(held, run_attempt(self.app, held, kind, self.middleware))

    def _abandon(self, held: Held) -> None:
        """A handler ignored its token: end the attempt without it, so its slot is free again."""
        with self.held.mutex:
            if held.outcome_sent:
                return
            held.outcome_sent = True
            replace = self.pool.retire(held)
        if replace:
            self.pool.add_thread()
        self.stats.abandoned += 1
        job = held.claimed.job
        log.error("handler of job %s ignored its %s for %.0fs; attempt %s ended without it, thread abandoned",
                  job.id, held.token.reason or "cancelled", self.leases.stop_grace_s, job.attempt_id)
        self.committer.put(abandoned_outcome(self.app, held, self.leases.stop_grace_s))

    # ------------------------------------------------------------ shutdown

    def _shutdown(self) -> None:
        held = self.held
        deadline = time.monotonic() + (0 if self.burst else self.shutdown_grace_s)
        with held.mutex:
            while held.running and time.monotonic() < deadline:
                held.changed.wait(min(0.2, max(0.01, deadline - time.monotonic())))
            leftover = {j: r.claimed.job.attempt_id for j, r in held.running.items() if not r.outcome_sent}
            for j in leftover:  # their late outcomes are dropped and the heartbeat stops renewing them
                held.running[j].outcome_sent = True
        if leftover:
            self._release(leftover)
        # let the finalizer commit what is already done
        t_end = time.monotonic() + 5.0
        while self.committer.pending() and time.monotonic() < t_end:
            time.sleep(0.02)
        self._done.set()
        self.pool.stop()
        for t in self._threads:
            t.join(timeout=10)
        try:
            presence.stopped(self.app.engine, self.name)
        except Exception:
            pass
        log.info("worker stopped name=%s stats=%s", self.name, self.stats)

    def _release(self, leftover: dict[str, int]) -> None:
        """Give back jobs still running at the end of the grace period: queued again at once, for a peer."""
        held = self.held
        released: list[str] = []
        with held.mutex:
            groups = by_app(self.app, self.app.tenancy, [held.running[j] for j in leftover])
        for app, group in groups:
            ids = {r.claimed.job.id: r.claimed.job.attempt_id for r in group}
            try:
                done = app.store.release(self.name, ids)
                released += done
                self.stats.released += len(done)
                self.committer.ack([held.running[j].claimed.entry_id for j in done if j in held.running])
            except Exception as exc:
                log.error("release of %d jobs failed (%s); their leases expire and peers reclaim them",
                          len(ids), exc)
        with held.mutex:
            for j in leftover:
                r = held.running.pop(j, None) if j in released else held.running.get(j)
                if r is not None:
                    r.token.cancel("released")
