"""The reader: while slots are free, read queue entries and claim their jobs; one strategy per queue type.

The strategy is chosen once, when the worker starts (``choose_reader``):

- ``TakeAndClaim``: the queue lives in the job database (``sql``): take entries and claim
  their jobs in one transaction, polling with a growing wait when there is nothing;
- ``ReadThenClaim``: a queue outside the database (``redis://``): a blocking read, then the claim;
- ``ReadClaimAndCommit``: the same on PostgreSQL, where the claim's statement also
  commits the outcomes that finished meanwhile (``Committer.claim_takes_outcomes``);
- ``TenantRouting``: a database per tenant: each entry is claimed in its tenant's database.

Every strategy shares the loop in ``Reader.run``: free slots, then a reclaim of entries
idle past the lease (other workers' dead claims) every ``reclaim_interval_s``, then a
read; a queue that fails is retried with a growing backoff.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor import store
from conveyor.errors import Unreachable
from conveyor.queue import START_CURSOR, Entry
from conveyor.worker.committer import Committer
from conveyor.worker.held import HeldJobs, WorkerStats

if TYPE_CHECKING:
    from conveyor.app import Conveyor

log = logging.getLogger("conveyor.worker")

#: starts a claimed attempt: ``start(claimed, app)`` (app: the tenant database's, or None for the worker's)
Start = Callable[[store.Claimed, "Conveyor | None"], None]


class Reader(abc.ABC):
    """The read loop; subclasses say how entries are read (``step``) and claimed (``claim``)."""

    def __init__(self, app: Conveyor, name: str, held: HeldJobs, committer: Committer, stats: WorkerStats,
                 stopping: threading.Event, start: Start, *, burst: bool, block_ms: int,
                 reclaim_interval_s: float, burst_give_up_s: float) -> None:
        s = app.settings
        self.app = app
        self.queue = app.queue
        self.name = name
        self.held = held
        self.committer = committer
        self.stats = stats
        self.stopping = stopping
        self.start = start
        self.burst = burst
        self.block_ms = block_ms
        self.lease_s = s.lease_seconds
        self.min_idle_ms = int((s.lease_seconds + s.reclaim_grace_seconds) * 1000)
        self.reclaim_interval_s = reclaim_interval_s
        #: a burst run ends with Unreachable once the queue has failed for this long without a break
        self.burst_give_up_s = burst_give_up_s
        self.claim_linger_s = 0.001
        self._cursor = START_CURSOR

    # ------------------------------------------------------------ the strategy

    @abc.abstractmethod
    def step(self, free: int) -> int:
        """Read up to ``free`` entries and claim their jobs; how many entries came."""

    @abc.abstractmethod
    def claim(self, entries: list[Entry]) -> None:
        """Claim the jobs of entries read (or reclaimed) and start each claimed attempt."""

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        """Read and claim until stopped (or, in a burst, until nothing is left)."""
        q = self.queue
        next_reclaim = 0.0
        backoff = 0.0
        failing_since: float | None = None
        group_ready = False
        while not self.stopping.is_set():
            free = self.held.free()
            if 0 < free < self.held.slots:
                free = self._gather(free)
            if free <= 0:
                with self.held.mutex:
                    # a slot frees when a handler ends: its outcome can ride on the claim that refills it
                    self.committer.reader_cycling = self.committer.claim_takes_outcomes()
                    self.held.wait_for_slots(1, 0.5)
                continue
            try:
                if not group_ready:
                    q.ensure_group()
                    group_ready = True
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + self.reclaim_interval_s
                    r = q.reclaim(self.name, self.min_idle_ms, self._cursor, count=free)
                    self._cursor = r.cursor
                    if r.entries:
                        self.claim(r.entries)
                        continue
                came = self.step(free)
                backoff = 0.0
                failing_since = None
            except Exception as exc:  # broker down: back off instead of spinning, resume by itself
                self.committer.set_cycling(False)
                self.stats.queue_errors += 1
                failing_since = failing_since or time.monotonic()
                if self.burst and time.monotonic() - failing_since > self.burst_give_up_s:
                    raise Unreachable(f"the queue has not answered for {self.burst_give_up_s:.0f} s: {exc}") from None
                backoff = min(30.0, max(0.2, backoff * 2))
                # a burst run says it once, when it gives up; a long-running worker says it each time
                log.log(logging.INFO if self.burst else logging.WARNING, "queue read failed (%s); retrying in %.1fs",
                        exc, backoff)
                self.stopping.wait(backoff)
                continue
            self.held.progressed = True
            if not came and self.burst:
                if len(self.held) == 0 and not self.committer.busy():
                    return
                with self.held.mutex:
                    self.held.wait_for_slots(self.held.slots, 0.05)

    def _gather(self, free: int) -> int:
        """Wait a moment for handlers about to end, so one read and one claim fill several slots.

        Only while some handler is running and at most ``claim_linger_s``: the same trade
        as the finalizer's group commit, a millisecond for fewer round trips per job.
        """
        held = self.held
        deadline = time.monotonic() + self.claim_linger_s
        with held.mutex:
            self.committer.reader_cycling = self.committer.claim_takes_outcomes()
            while free < held.slots:
                left = deadline - time.monotonic()
                if left <= 0 or not held.any_running_locked():
                    break
                held.wait_for_slots(held.slots, left)
                free = held.free_locked()
        return free

    def _started(self, claimed: list[store.Claimed], app: Conveyor | None = None) -> None:
        for c in claimed:
            self.stats.claimed += 1
            if c.reclaimed:
                self.stats.reclaimed += 1
            self.start(c, app)


class ReadThenClaim(Reader):
    """A queue outside the job database: read (blocking while idle), then claim in the database."""

    def step(self, free: int) -> int:
        """A blocking read (non-blocking in a burst), then the claim."""
        entries = self.queue.read(self.name, free, block_ms=0 if self.burst else self.block_ms)
        if entries:
            self.claim(entries)
        return len(entries)

    def claim(self, entries: list[Entry]) -> None:
        """Claim in the worker's database, committing the outcomes the committer left to this claim."""
        self.stats.read += len(entries)
        outcomes = self.committer.take_for_claim()
        pairs = [(e.entry_id, e.job_id) for e in entries]
        done: list[store.Finalized] = []
        left: list[store.Outcome] = []
        try:
            if outcomes:
                claimed, skip, done, left = self.app.store.claim_and_finalize(pairs, self.name, self.lease_s,
                                                                          outcomes)
            else:
                claimed, skip, _events = self.app.store.claim(pairs, self.name, self.lease_s)
        except Exception as exc:
            # the entries stay pending in the queue; the reclaim loop retries them
            log.error("claim failed for %d entries: %s", len(entries), exc)
            if outcomes:
                self.committer.give_back(outcomes)
            self.stopping.wait(0.5)
            return
        for o in left:  # failures and stale attempts: the finalizer's general path
            self.committer.put(o)
        if skip or done:
            self.stats.skipped += len(skip)
            self.committer.ack_later(skip + [d.entry_id for d in done])  # off this loop's path
        if done:
            left_ids = {id(o) for o in left}
            self.committer.finalized([o for o in outcomes if id(o) not in left_ids], done)
        self._started(claimed)


class ReadClaimAndCommit(ReadThenClaim):
    """PostgreSQL with a queue outside it: outcomes that finish while the reader cycles commit with its claim."""

    def step(self, free: int) -> int:
        """A non-blocking read while cycling; only when it brings nothing, a blocking one."""
        entries: list[Entry] = []
        if self.committer.claim_takes_outcomes():
            self.committer.set_cycling(True)
        try:
            entries = self.queue.read(self.name, free, block_ms=0)
        finally:
            if not entries:
                self.committer.set_cycling(False)
        if not entries and not self.burst:
            entries = self.queue.read(self.name, free, block_ms=self.block_ms)
        self.committer.drained = len(entries) < free
        if entries:
            self.claim(entries)
        return len(entries)


class TakeAndClaim(ReadThenClaim):
    """The queue lives in the job database: take entries and claim their jobs in one transaction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._idle = 0.002

    def step(self, free: int) -> int:
        """Take and claim; with nothing to take, poll again after a short, growing wait."""
        q = self.queue
        with self.app.engine.begin() as conn:
            entries = q.take(conn, self.name, free)
            if entries:
                claimed, skip, events = self.app.store.claim([(e.entry_id, e.job_id) for e in entries],
                                                             self.name, self.lease_s, conn=conn)
                if skip:
                    q.ack(skip, conn=conn)
        if entries:
            self.app.store.observers.publish(events)
            self.stats.read += len(entries)
            self.stats.skipped += len(skip)
            self._started(claimed)
            self._idle = 0.002
            return len(entries)
        if not self.burst:
            # other processes' publishes are only seen by polling: a short, growing wait
            q.wait(self._idle)
            self._idle = min(self._idle * 2, q.poll_max_s, self.block_ms / 1000.0)
        return 0


class TenantRouting(ReadThenClaim):
    """A database per tenant: each entry names its tenant, and its job is claimed in that database."""

    def claim(self, entries: list[Entry]) -> None:
        """Claim each tenant's entries in its own database; one failing database does not hold the others."""
        self.stats.read += len(entries)
        self.committer.take_for_claim()  # never cycling here: the finalizer commits every outcome
        groups, skip = self._route(entries)
        failed = 0
        for key, (app, group) in groups.items():
            try:
                claimed, more, _events = app.store.claim([(e.entry_id, e.job_id) for e in group],
                                                         self.name, self.lease_s)
            except Exception as exc:  # they stay pending in the queue; the reclaim loop retries them
                log.error("claim failed for %d entries of tenant %s: %s", len(group), key, exc)
                failed += 1
                continue
            skip += more
            self._started(claimed, app)
        if skip:
            self.stats.skipped += len(skip)
            self.committer.ack_later(skip)
        if failed and failed == len(groups):
            self.stopping.wait(0.5)

    def _route(self, entries: list[Entry]) -> tuple[dict[Any, tuple[Conveyor, list[Entry]]], list[str]]:
        """Entries by tenant database, and the entries to acknowledge unrun (they name no tenant database).

        An entry whose tenant cannot be looked up now (the control database is down) is in
        neither: it stays pending and the reclaim loop brings it back.
        """
        tenancy = self.app.tenancy
        assert tenancy is not None
        groups: dict[Any, tuple[Conveyor, list[Entry]]] = {}
        drop: list[str] = []
        from conveyor.tenancy import TenantError
        for e in entries:
            try:
                key = tenancy.key_of(e.fields)
                group = groups.get(key)
                if group is None:
                    group = groups[key] = (tenancy.app_for(key), [])
            except TenantError as exc:
                log.warning("queue entry %s (job %s) names no tenant database here (%s); acknowledged unrun",
                            e.entry_id, e.job_id, exc)
                drop.append(e.entry_id)
                continue
            except Exception as exc:
                log.error("cannot look up the tenant of entry %s (%s); it stays pending", e.entry_id, exc)
                continue
            group[1].append(e)
        return groups, drop


def choose_reader(app: Conveyor) -> type[Reader]:
    """The strategy for this deployment's queue and database, chosen once."""
    if app.tenancy is not None:
        return TenantRouting
    if app.queue.transactional:
        return TakeAndClaim
    if app.store.claim_commits_outcomes:
        return ReadClaimAndCommit
    return ReadThenClaim
