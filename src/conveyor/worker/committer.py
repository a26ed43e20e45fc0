"""The committer: the buffer of finished attempts, the one rule of who commits them, and the finalizer thread.

An attempt's outcome is committed by exactly one of two paths:

- **with the next claim** (PostgreSQL job database, queue outside it, one database): while
  the reader is *cycling* (between a read that may bring work and its claim) the outcomes
  that finish are left to it, and ``JobStore.claim_and_finalize`` commits them in the
  claim's statement, saving a round trip per job;
- **by the finalizer thread** otherwise: a group commit (``JobStore.finalize``) of what
  finished in the last ``finalize_linger_s``, then the queue acks.

``claim_takes_outcomes()`` is that rule; every other method only moves outcomes in or out
of the buffer under the shared mutex.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor import store
from conveyor.metrics import get_metrics
from conveyor.worker.held import Held, HeldJobs, WorkerStats

if TYPE_CHECKING:
    from conveyor.app import Conveyor

log = logging.getLogger("conveyor.worker")


class Committer:
    """Finished attempts awaiting their commit, and the thread that commits and acks them."""

    def __init__(self, app: Conveyor, held: HeldJobs, stats: WorkerStats, done: threading.Event, *,
                 combine: bool, tenancy: Any, on_finalized: Callable[[store.Finalized], None] | None) -> None:
        self.app = app
        self.held = held
        self.stats = stats
        self._done = done
        self._tenancy = tenancy
        self.on_finalized = on_finalized
        q = app.queue
        self._ack_in_tx = (lambda conn, ids: q.ack(ids, conn=conn)) if q.transactional else None
        #: outcomes may ride on the reader's claims (PostgreSQL, a queue outside the database, one database)
        self.combine = combine
        self.finalize_linger_s = 0.002
        self.reader_defer_s = 0.005
        self._outcomes: collections.deque[store.Outcome] = collections.deque()
        self._acks: list[str] = []  # entries committed elsewhere (the reader), for this thread to ack
        # outcomes a failing tenant database could not take: (not before, outcomes); and each one's backoff
        self._deferred: list[tuple[float, list[store.Outcome]]] = []
        self._defer_s: dict[Any, float] = {}
        #: the reader is between a read that may bring work and its claim: it commits what finishes meanwhile
        self.reader_cycling = False
        #: the last read brought fewer entries than asked: no claim is imminent, so finished attempts
        #: are not held back for one (they commit at once, for latency)
        self.drained = False

    # ------------------------------------------------------------ the rule

    def claim_takes_outcomes(self) -> bool:
        """Whether outcomes finishing now should wait for the reader's next claim to commit them."""
        return self.combine and not self.drained

    def set_cycling(self, on: bool) -> None:
        """The reader starts (``on``) or ends a read-then-claim cycle."""
        with self.held.mutex:
            self.reader_cycling = on
            if not on:  # outcomes it would have taken are the finalizer's again
                self.held.finalizer_wake.notify()

    def take_for_claim(self) -> list[store.Outcome]:
        """What the reader commits with the claim it is about to make; it is no longer cycling after."""
        with self.held.mutex:
            outcomes = self._take() if self.reader_cycling else []
            self.reader_cycling = False
            if self._outcomes:
                self.held.finalizer_wake.notify()
        return outcomes

    # ------------------------------------------------------------ in

    def attempt_ended(self, attempt: Held, outcome: store.Outcome) -> None:
        """A slot's handler ended: buffer its outcome unless the attempt was given up on meanwhile."""
        held = self.held
        with held.mutex:
            if attempt.outcome_sent:
                return  # the watchdog already gave up on this attempt
            attempt.outcome_sent = True
            self._outcomes.append(outcome)
            free = held.slot_freed()
            # a cycling reader commits it with its next claim, unless held jobs are at their cap
            # and no claim can come until the finalizer commits
            if not self.reader_cycling or free == 0:
                held.finalizer_wake.notify()

    def put(self, outcome: store.Outcome) -> None:
        """Buffer an outcome for the finalizer (an abandoned attempt, a failure the claim could not commit)."""
        with self.held.mutex:
            self._outcomes.append(outcome)
            self.held.finalizer_wake.notify()
            self.held.slot_freed()

    def give_back(self, outcomes: list[store.Outcome]) -> None:
        """Outcomes a failed claim was to commit go back to the front of the buffer."""
        with self.held.mutex:
            self._outcomes.extendleft(reversed(outcomes))
            self.held.finalizer_wake.notify()

    def ack_later(self, entry_ids: list[str]) -> None:
        """Entries to ack off the reader's path (committed by its claim, or skipped)."""
        with self.held.mutex:
            self._acks.extend(entry_ids)
            self.held.finalizer_wake.notify()

    def busy(self) -> bool:
        """Whether outcomes await their commit (a burst run does not end before)."""
        return bool(self._outcomes)

    def pending(self) -> bool:
        """Whether outcomes await their commit, now or after a tenant database's backoff."""
        return bool(self._outcomes or self._deferred)

    def _take(self, limit: int = 500) -> list[store.Outcome]:
        batch: list[store.Outcome] = []
        while self._outcomes and len(batch) < limit:
            batch.append(self._outcomes.popleft())
        return batch

    # ------------------------------------------------------------ the finalizer thread

    def loop(self) -> None:
        """Commit buffered outcomes in groups and send acks until the worker is done and nothing is left."""
        held = self.held
        while True:
            with held.mutex:
                acks, self._acks = self._acks, []
            if acks:
                self.ack(acks)
            if self._deferred:
                self._retry_deferred()
            with held.mutex:
                if not self._outcomes:
                    if self._done.is_set() and not self._acks:
                        if self._deferred:
                            log.error("%d outcome(s) of unreachable tenant databases not recorded at shutdown; "
                                      "their leases expire and the jobs run again",
                                      sum(len(d[1]) for d in self._deferred))
                        return
                    if not self._acks:
                        held.finalizer_wake.wait(0.2)
                    continue
                first_seen = time.monotonic()
                # group commit: when more attempts are about to finish, wait a moment and finalize them
                # together; when the reader is about to claim, it commits them with its claim instead
                while self._outcomes and len(self._outcomes) < 500:
                    waited = time.monotonic() - first_seen
                    if self.reader_cycling and waited < self.reader_defer_s:
                        held.finalizer_wake.wait(self.reader_defer_s - waited)
                        continue
                    if not held.any_running_locked() or waited >= self.finalize_linger_s:
                        break
                    held.finalizer_wake.wait(self.finalize_linger_s - waited)
                batch = self._take()
            if batch:
                self.finalize(batch)

    def finalize(self, batch: list[store.Outcome]) -> None:
        """Commit outcomes (retrying while the database is down; fencing keeps a late commit safe), then ack."""
        if self._tenancy is not None:
            self._finalize_tenants(batch)
            return
        delay = 0.2
        while True:
            try:
                done, _events = self.app.store.finalize(batch, ack=self._ack_in_tx)
                break
            except Exception as exc:  # DB down: hold the outcomes; fencing keeps a late commit safe
                log.error("finalize failed for %d outcomes: %s; retrying in %.1fs", len(batch), exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        if self._ack_in_tx is None:
            self.ack([d.entry_id for d in done])
        self.finalized(batch, done)

    def _finalize_tenants(self, batch: list[store.Outcome]) -> None:
        """Commit each tenant's outcomes in its database; a failing database's wait for a retry."""
        with self.held.mutex:
            apps = {o.job_id: r.app for o in batch if (r := self.held.running.get(o.job_id)) is not None}
        groups: dict[int, tuple[Conveyor, list[store.Outcome]]] = {}
        for o in batch:
            app = apps.get(o.job_id)
            if app is None:  # released or forgotten meanwhile: nothing holds it any more
                log.warning("outcome of job %s attempt %s has no held job; dropped", o.job_id, o.attempt_id)
                continue
            groups.setdefault(id(app), (app, []))[1].append(o)
        for app, outcomes in groups.values():
            try:
                done, _events = app.store.finalize(outcomes)
            except Exception as exc:  # that database is down: hold its outcomes; fencing keeps a late commit safe
                delay = min(self._defer_s.get(app.tenant_key, 0.1) * 2, 10.0)
                self._defer_s[app.tenant_key] = delay
                log.error("finalize failed for %d outcomes of tenant %s: %s; retrying in %.1fs", len(outcomes),
                          app.tenant_key, exc, delay)
                with self.held.mutex:
                    self._deferred.append((time.monotonic() + delay, outcomes))
                continue
            self._defer_s.pop(app.tenant_key, None)
            self.ack([d.entry_id for d in done])
            self.finalized(outcomes, done)

    def _retry_deferred(self) -> None:
        now = time.monotonic()
        with self.held.mutex:
            due = [o for at, outs in self._deferred if at <= now for o in outs]
            self._deferred = [(at, outs) for at, outs in self._deferred if at > now]
        if due:
            self._finalize_tenants(due)

    def finalized(self, batch: list[store.Outcome], done: list[store.Finalized]) -> None:
        """Count, report and forget committed outcomes."""
        for d in done:
            if d.action == "succeeded":
                self.stats.succeeded += 1
            elif d.action == "job_failed":
                self.stats.failed += 1
            elif d.action == "retry_scheduled":
                self.stats.retried += 1
            else:
                self.stats.stale += 1
            if self.on_finalized is not None:
                self.on_finalized(d)
        held = self.held
        with held.mutex:
            finished = {o.job_id: held.running.pop(o.job_id, None) for o in batch}
            held.changed.notify_all()
            held.slot_freed()  # fewer held jobs: the cap on them may have kept slots closed
        held.progressed = True
        m = get_metrics()
        if m is not None:
            now = time.monotonic()
            for d in done:
                run = finished.get(d.job_id)
                if run is not None:
                    m.attempts.labels(run.claimed.job.kind, d.action).observe(now - run.started)
            m.in_flight.set(len(held))

    def ack(self, entry_ids: list[str]) -> None:
        """Ack entries; a failure is left to redelivery (the claim then finds the job final and acks it)."""
        try:
            self.app.queue.ack(entry_ids)
        except Exception as exc:  # the entries are reclaimed later, found final, and acked then
            self.stats.queue_errors += 1
            log.warning("ack of %d entries failed: %s", len(entry_ids), exc)
