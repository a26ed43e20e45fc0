"""The worker: read → claim → run → finalize → ack, with N slots, a heartbeat and a reclaim loop.

Threads: the caller's thread reads and claims; one thread per slot runs handlers
(a slot whose handler is abandoned gets a fresh thread); one heartbeat thread renews
leases, refreshes queue entries, fires timeouts and cancellations; one finalizer
thread commits outcomes in batches, then acks.

In a database-per-tenant deployment (``conveyor.tenancy``) one worker serves every
tenant database: each queue entry names its tenant (and org), the claim goes to that
database, and the job's heartbeat, finalize and release follow it there. A tenant
database that fails delays only its own jobs: its claims stay in the queue for the
reclaim loop, its outcomes are retried after a backoff while the others commit.
"""

from __future__ import annotations

import collections
import logging
import queue as stdqueue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor import observers, presence, store
from conveyor.errors import Cancelled, ConfigError, JobError, Unreachable
from conveyor.kinds import CancelToken, JobContext, JobKind
from conveyor.metrics import get_metrics
from conveyor.queue import START_CURSOR, Entry

if TYPE_CHECKING:
    from conveyor.app import Conveyor

log = logging.getLogger("conveyor.worker")


@dataclass
class WorkerStats:
    """Counters of one worker's life."""

    read: int = 0
    claimed: int = 0
    reclaimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    stale: int = 0
    skipped: int = 0
    released: int = 0
    queue_errors: int = 0
    abandoned: int = 0


@dataclass
class _Running:
    claimed: store.Claimed
    token: CancelToken
    deadline: float | None
    app: Conveyor  # whose database holds the job
    thread: threading.Thread | None = None
    started: float = field(default_factory=time.monotonic)
    outcome_sent: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Worker:
    """Runs jobs from the queue until stopped (or, with ``burst``, until no work is left)."""

    def __init__(self, app: Conveyor, *, concurrency: int | None = None, name: str | None = None,
                 burst: bool = False, block_ms: int = 1000, reclaim_interval_s: float | None = None,
                 shutdown_grace_s: float = 30.0, on_finalized: Callable[[store.Finalized], None] | None = None,
                 burst_give_up_s: float = 10.0) -> None:
        self.app = app
        #: a burst run ends with Unreachable once the queue has failed for this long without a break
        self.burst_give_up_s = burst_give_up_s
        s = app.settings
        self.slots = max(1, concurrency or s.concurrency)
        self.name = name or s.consumer_name
        self.burst = burst
        self.block_ms = block_ms
        self.lease_s = s.lease_seconds
        self.heartbeat_s = s.heartbeat_interval
        self.min_idle_ms = int((s.lease_seconds + s.reclaim_grace_seconds) * 1000)
        self.reclaim_interval_s = reclaim_interval_s or max(0.5, min(10.0, s.lease_seconds / 2))
        self.shutdown_grace_s = shutdown_grace_s
        # cancellations are noticed between heartbeats too, with one cheap primary-key read
        self.cancel_poll_s = min(2.0, self.heartbeat_s)
        # how long a handler may ignore its cancellation token before its slot is reclaimed
        self.stop_grace_s = max(2.0, self.heartbeat_s)
        self.on_finalized = on_finalized
        self.stats = WorkerStats()
        self.finalize_linger_s = 0.002
        self.claim_linger_s = 0.001
        self.max_held = 4 * self.slots
        q = app.queue
        # a database per tenant: entries are routed to their tenant's database (None: one database)
        self._tenancy = app.tenancy
        if self._tenancy is not None and q.transactional:
            raise ConfigError("a worker serving many tenant databases needs a queue outside them "
                              "(redis://, or the sql queue of the control database)")
        self._ack_in_tx = (lambda conn, ids: q.ack(ids, conn=conn)) if q.transactional else None
        # on PostgreSQL with a queue outside the database, a claim also commits what finished meanwhile
        self._combine = app.engine.dialect.name == "postgresql" and not q.transactional and self._tenancy is None
        # outcomes a failing tenant database could not take: (not before, outcomes); and each one's backoff
        self._deferred: list[tuple[float, list[store.Outcome]]] = []
        self._defer_s: dict[Any, float] = {}
        self._running: dict[str, _Running] = {}
        # One mutex, three conditions: each thread is woken only by what it waits for, because
        # every needless wake-up of a thread costs the others the GIL on a job's hot path.
        mutex = threading.RLock()
        self._lock = threading.Condition(mutex)  # held jobs changed (shutdown waits on it)
        self._reader_wake = threading.Condition(mutex)  # slots freed, or stop
        self._finalizer_wake = threading.Condition(mutex)  # outcomes or acks to send, or stop
        # the reader sleeps until this many slots are free (0: it is not waiting)
        self._reader_wants = 0
        # finished attempts awaiting their commit; guarded by the mutex
        self._outcomes: collections.deque[store.Outcome] = collections.deque()
        # set while the reader is between a read that may bring work and its claim: it will commit
        # the outcomes waiting then with that claim, so the finalizer leaves them to it
        self._reader_cycling = False
        self.reader_defer_s = 0.005
        # the last read brought fewer entries than asked: no claim is imminent, so finished
        # attempts are not held back for one (they commit at once, for latency)
        self._drained = False
        self._acks: list[str] = []  # entries the reader committed, for the finalizer thread to ack
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._cursor = START_CURSOR
        self._progressed = True
        self._threads: list[threading.Thread] = []
        self._work: stdqueue.SimpleQueue[tuple[_Running, JobKind | None] | None] = stdqueue.SimpleQueue()
        self._slot_threads: set[threading.Thread] = set()
        self._retired: set[threading.Thread] = set()

    # ------------------------------------------------------------ public

    def run(self, install_signals: bool = True) -> WorkerStats:
        """Block until stopped; returns the counters."""
        engine = self.app.engine
        presence.register(engine, self.name, "worker", self.slots)
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        self._threads = [threading.Thread(target=self._heartbeat_loop, name=f"{self.name}-heartbeat", daemon=True),
                         threading.Thread(target=self._finalize_loop, name=f"{self.name}-finalizer", daemon=True)]
        for t in self._threads:
            t.start()
        for _ in range(self.slots):
            self._add_slot_thread()
        log.info("worker started name=%s slots=%d queue=%s", self.name, self.slots, self.app.settings.queue_url)
        try:
            self._read_loop()
        finally:
            self._cycling(False)
            self._shutdown()
        return self.stats

    def stop(self) -> None:
        """Stop reading; running jobs finish within the grace period, the rest are released."""
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
            self._reader_wake.notify_all()
            self._finalizer_wake.notify_all()

    @property
    def in_flight(self) -> int:
        """Jobs held right now."""
        with self._lock:
            return len(self._running)

    # ------------------------------------------------------------ read + claim

    def _free(self) -> int:
        """Slots whose handler is not running; a finished attempt waiting for its commit holds no slot.

        Held jobs (running or awaiting finalize) are capped too, so a slow database
        cannot make the worker take ever more work.
        """
        with self._lock:
            return self._free_locked()

    def _free_locked(self) -> int:
        busy = sum(1 for r in self._running.values() if not r.outcome_sent)
        return max(0, min(self.slots - busy, self.max_held - len(self._running)))

    def _wait_for_slots(self, wanted: int, timeout: float) -> None:
        """Sleep (the mutex held) until ``wanted`` slots are free, or ``timeout``."""
        self._reader_wants = wanted
        try:
            self._reader_wake.wait(timeout)
        finally:
            self._reader_wants = 0

    def _slot_freed(self) -> int:
        """Wake the reader if it now has the free slots it waits for (the mutex held); returns them."""
        free = self._free_locked()
        if self._reader_wants and free >= self._reader_wants:
            self._reader_wake.notify()
        return free

    def _defer_to_claim(self) -> bool:
        """Whether outcomes finishing now should wait for the reader's next claim to commit them."""
        return self._combine and not self._drained

    def _gather(self, free: int) -> int:
        """Wait a moment for handlers about to end, so one read and one claim fill several slots.

        Only while some handler is running and at most ``claim_linger_s``: the same trade
        as the finalizer's group commit, a millisecond for fewer round trips per job.
        """
        deadline = time.monotonic() + self.claim_linger_s
        with self._lock:
            self._reader_cycling = self._defer_to_claim()
            while free < self.slots:
                left = deadline - time.monotonic()
                if left <= 0 or not any(not r.outcome_sent for r in self._running.values()):
                    break
                self._wait_for_slots(self.slots, left)
                free = self._free_locked()
        return free

    def _read_loop(self) -> None:
        q = self.app.queue
        next_reclaim = 0.0
        backoff = 0.0
        failing_since: float | None = None
        group_ready = False
        idle = 0.002
        while not self._stopping.is_set():
            free = self._free()
            if 0 < free < self.slots:
                free = self._gather(free)
            if free <= 0:
                with self._lock:
                    # a slot frees when a handler ends: its outcome can ride on the claim that refills it
                    self._reader_cycling = self._defer_to_claim()
                    self._wait_for_slots(1, 0.5)
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
                        self._claim_and_start(r.entries, reclaim=True)
                        continue
                entries: list[Entry] = []
                if q.transactional:
                    # the queue lives in the job database: take and claim in one transaction
                    if self._take_and_claim(free):
                        backoff = 0.0
                        failing_since = None
                        idle = 0.002
                        self._progressed = True
                        continue
                    if not self.burst:
                        # other processes' publishes are only seen by polling: a short, growing wait
                        q.wait(idle)
                        idle = min(idle * 2, q.poll_max_s, self.block_ms / 1000.0)
                elif self._combine:
                    if self._defer_to_claim():
                        self._cycling(True)
                    try:
                        entries = q.read(self.name, free, block_ms=0)
                    finally:
                        if not entries:
                            self._cycling(False)
                    if not entries and not self.burst:
                        entries = q.read(self.name, free, block_ms=self.block_ms)
                    self._drained = len(entries) < free
                else:
                    entries = q.read(self.name, free, block_ms=0 if self.burst else self.block_ms)
                backoff = 0.0
                failing_since = None
            except Exception as exc:  # broker down: back off instead of spinning, resume by itself
                self._cycling(False)
                self.stats.queue_errors += 1
                failing_since = failing_since or time.monotonic()
                if self.burst and time.monotonic() - failing_since > self.burst_give_up_s:
                    raise Unreachable(f"the queue has not answered for {self.burst_give_up_s:.0f} s: {exc}") from None
                backoff = min(30.0, max(0.2, backoff * 2))
                # a burst run says it once, when it gives up; a long-running worker says it each time
                log.log(logging.INFO if self.burst else logging.WARNING, "queue read failed (%s); retrying in %.1fs",
                        exc, backoff)
                self._stopping.wait(backoff)
                continue
            self._progressed = True
            if entries:
                self._claim_and_start(entries, reclaim=False)
            elif self.burst:
                if self.in_flight == 0 and not self._outcomes:
                    return
                with self._lock:
                    self._wait_for_slots(self.slots, 0.05)

    def _take_and_claim(self, count: int) -> int:
        """Read and claim in one database transaction (transactional queues); returns entries taken."""
        q = self.app.queue
        with self.app.engine.begin() as conn:
            entries = q.take(conn, self.name, count)
            if not entries:
                return 0
            claimed, skip, events = store.claim(conn, [(e.entry_id, e.job_id) for e in entries],
                                                self.name, self.lease_s)
            if skip:
                q.ack(skip, conn=conn)
        observers.publish(events)
        self.stats.read += len(entries)
        self.stats.skipped += len(skip)
        for c in claimed:
            self.stats.claimed += 1
            self.stats.reclaimed += int(c.reclaimed)
            self._start(c)
        return len(entries)

    def _cycling(self, on: bool) -> None:
        with self._lock:
            self._reader_cycling = on
            if not on:  # outcomes it would have taken are the finalizer's again
                self._finalizer_wake.notify()

    def _claim_and_start(self, entries: list[Entry], reclaim: bool) -> None:
        if self._tenancy is not None:
            self._claim_and_start_tenants(entries)
            return
        self.stats.read += len(entries)
        with self._lock:
            # what finished meanwhile is committed with this claim, in the same statement
            outcomes = self._take_outcomes() if self._reader_cycling else []
            self._reader_cycling = False
            if self._outcomes:
                self._finalizer_wake.notify()
        pairs = [(e.entry_id, e.job_id) for e in entries]
        done: list[store.Finalized] = []
        left: list[store.Outcome] = []
        try:
            if outcomes:
                claimed, skip, done, left = store.claim_and_finalize(self.app.engine, pairs, self.name,
                                                                     self.lease_s, outcomes)
            else:
                claimed, skip, _events = store.claim(self.app.engine, pairs, self.name, self.lease_s)
        except Exception as exc:
            # the entries stay pending in the queue; the reclaim loop retries them
            log.error("claim failed for %d entries: %s", len(entries), exc)
            if outcomes:
                with self._lock:
                    self._outcomes.extendleft(reversed(outcomes))
                    self._finalizer_wake.notify()
            self._stopping.wait(0.5)
            return
        for o in left:  # failures and stale attempts: the finalizer's general path
            self._put_outcome(o)
        if skip or done:
            self.stats.skipped += len(skip)
            with self._lock:  # the finalizer thread sends them, off this loop's path
                self._acks.extend(skip + [d.entry_id for d in done])
                self._finalizer_wake.notify()
        if done:
            left_ids = {id(o) for o in left}
            self._finalized([o for o in outcomes if id(o) not in left_ids], done)
        for c in claimed:
            self.stats.claimed += 1
            if c.reclaimed:
                self.stats.reclaimed += 1
            self._start(c)

    def _route(self, entries: list[Entry]) -> tuple[dict[Any, tuple[Conveyor, list[Entry]]], list[str]]:
        """Entries by tenant database, and the entries to acknowledge unrun (they name no tenant database).

        An entry whose tenant cannot be looked up now (the control database is down) is in
        neither: it stays pending and the reclaim loop brings it back.
        """
        assert self._tenancy is not None
        groups: dict[Any, tuple[Conveyor, list[Entry]]] = {}
        drop: list[str] = []
        from conveyor.tenancy import TenantError
        for e in entries:
            try:
                key = self._tenancy.key_of(e.fields)
                group = groups.get(key)
                if group is None:
                    group = groups[key] = (self._tenancy.app_for(key), [])
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

    def _claim_and_start_tenants(self, entries: list[Entry]) -> None:
        """Claim each tenant's entries in its own database; one failing database does not hold the others."""
        self.stats.read += len(entries)
        with self._lock:
            self._reader_cycling = False
            if self._outcomes:
                self._finalizer_wake.notify()
        groups, skip = self._route(entries)
        failed = 0
        for key, (app, group) in groups.items():
            try:
                claimed, more, _events = store.claim(app.engine, [(e.entry_id, e.job_id) for e in group],
                                                     self.name, self.lease_s)
            except Exception as exc:  # they stay pending in the queue; the reclaim loop retries them
                log.error("claim failed for %d entries of tenant %s: %s", len(group), key, exc)
                failed += 1
                continue
            skip += more
            for c in claimed:
                self.stats.claimed += 1
                if c.reclaimed:
                    self.stats.reclaimed += 1
                self._start(c, app)
        if skip:
            self.stats.skipped += len(skip)
            with self._lock:
                self._acks.extend(skip)
                self._finalizer_wake.notify()
        if failed and failed == len(groups):
            self._stopping.wait(0.5)

    def _start(self, c: store.Claimed, app: Conveyor | None = None) -> None:
        kind: JobKind | None = self.app.kinds.get(c.job.kind)
        timeout = kind.timeout_s if kind else None
        run = _Running(c, CancelToken(), time.monotonic() + timeout if timeout else None, app or self.app)
        run.token.on_cancel(lambda _reason: run.extra.setdefault("stop_at", time.monotonic()))
        with self._lock:
            self._running[c.job.id] = run
        self._work.put((run, kind))

    def _add_slot_thread(self) -> None:
        t = threading.Thread(target=self._slot_loop, name=f"{self.name}-slot", daemon=True)
        with self._lock:
            self._slot_threads.add(t)
        t.start()

    def _slot_loop(self) -> None:
        me = threading.current_thread()
        while True:
            item = self._work.get()
            if item is None:
                break
            run, kind = item
            run.thread = me
            if not run.outcome_sent:  # else given up on (released, abandoned) before it started
                self._execute(run, kind)
            with self._lock:
                if me in self._retired:  # its handler was abandoned; a fresh thread took the slot
                    self._retired.discard(me)
                    break
        with self._lock:
            self._slot_threads.discard(me)

    # ------------------------------------------------------------ execute

    def _execute(self, run: _Running, kind: JobKind | None) -> None:
        job = run.claimed.job
        settings = self.app.settings
        ctx = JobContext(job.id, job.attempt_id, job.kind, job.payload, job.tenant_id, job.org_id, job.file_id,
                         job.trace_id, run.token, self.app.storage, {"app": run.app})
        base: dict[str, Any] = dict(job_id=job.id, attempt_id=job.attempt_id, entry_id=run.claimed.entry_id)
        if kind is None:
            outcome = store.Outcome(**base, ok=False, error_code="handler_not_found",
                                    error_message=f"no loaded plugin registers job kind {job.kind!r}; "
                                                  f"`conveyor plugins` lists what this worker loaded")
        else:
            try:
                result = kind.handler(ctx)
                if run.token.cancelled:
                    raise Cancelled(run.token.reason or "cancelled")
                try:
                    result = store.check_json(result)
                except store.InvalidPayload as exc:
                    raise JobError("internal_error", f"handler of {job.kind} returned a result that cannot be "
                                                     f"stored: {exc}", retryable=False) from None
                outcome = store.Outcome(**base, ok=True, result=result)
            except JobError as exc:
                code = exc.code
                if run.token.cancelled and run.token.reason in ("timeout", "lease_lost", "cancelled"):
                    code = run.token.reason or code
                retryable = self.app.plugins.catalog.is_retryable(code) if code != exc.code else \
                    exc.retryable(self.app.plugins.catalog)
                outcome = store.Outcome(**base, ok=False, error_code=code, error_message=exc.message,
                                        retryable=retryable, details=exc.details)
            except Exception as exc:
                tb = traceback.format_exc(limit=8)
                outcome = store.Outcome(**base, ok=False, error_code="internal_error",
                                        error_message=f"{type(exc).__name__}: {exc}\n{tb}", retryable=True)
            if not outcome.ok and outcome.retryable:
                delay = kind.retry.delay(job.attempts, settings.retry_base_seconds, settings.retry_max_seconds)
                outcome = store.Outcome(**{**outcome.__dict__, "retry_delay_s": delay})
        with self._lock:
            if run.outcome_sent:
                return  # the watchdog already gave up on this attempt
            run.outcome_sent = True
            self._outcomes.append(outcome)
            free = self._slot_freed()
            # a cycling reader commits it with its next claim, unless held jobs are at their cap
            # and no claim can come until the finalizer commits
            if not self._reader_cycling or free == 0:
                self._finalizer_wake.notify()

    # ------------------------------------------------------------ heartbeat

    def _by_app(self, running: list[_Running]) -> list[tuple[Conveyor, list[_Running]]]:
        """Held jobs grouped by the database that holds them (one group with one database)."""
        if self._tenancy is None:
            return [(self.app, running)] if running else []
        groups: dict[int, tuple[Conveyor, list[_Running]]] = {}
        for r in running:
            groups.setdefault(id(r.app), (r.app, []))[1].append(r)
        return list(groups.values())

    def _heartbeat_loop(self) -> None:
        engine = self.app.engine
        next_beat = time.monotonic() + self.heartbeat_s
        next_cancel_poll = time.monotonic() + self.cancel_poll_s
        tick = min(0.25, self.heartbeat_s / 4)
        while not self._done.wait(tick):
            now = time.monotonic()
            with self._lock:
                running = list(self._running.values())
            for run in running:
                if run.deadline is not None and now >= run.deadline and not run.token.cancelled:
                    run.token.cancel("timeout")
                elif "stop_at" in run.extra and now - run.extra["stop_at"] > self.stop_grace_s:
                    self._abandon(run)
            groups = self._by_app(running)
            if now >= next_cancel_poll and now < next_beat and running:
                next_cancel_poll = now + self.cancel_poll_s
                for app, group in groups:
                    try:
                        for job_id in store.cancelled_among(app.engine, [r.claimed.job.id for r in group]):
                            r = self._running.get(job_id)
                            if r is not None:
                                r.token.cancel("cancelled")
                    except Exception as exc:
                        log.debug("cancel poll failed: %s", exc)
            if now < next_beat:
                continue
            next_beat = now + self.heartbeat_s
            try:
                renewed: list[_Running] = []
                for app, group in groups:  # each database's leases; a failing one is left to expire
                    try:
                        lost = store.renew(app.engine, self.name,
                                           {r.claimed.job.id: r.claimed.job.attempt_id for r in group}, self.lease_s)
                    except Exception as exc:
                        if self._tenancy is None:
                            raise
                        log.warning("heartbeat failed for tenant %s: %s", app.tenant_key, exc)
                        continue
                    renewed += group
                    for job_id, why in lost.items():
                        r = self._running.get(job_id)
                        if r is not None:
                            r.token.cancel(why)
                self.app.queue.touch(self.name, [r.claimed.entry_id for r in renewed])
                presence.beat(engine, self.name, len(running), self._progressed)
                self._progressed = False
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    def _abandon(self, run: _Running) -> None:
        """A handler ignored its token: end the attempt without it, so its slot is free again."""
        with self._lock:
            if run.outcome_sent:
                return
            run.outcome_sent = True
            if run.thread is not None and run.thread in self._slot_threads:
                self._retired.add(run.thread)
        if run.thread is not None:
            self._add_slot_thread()
        self.stats.abandoned += 1
        reason = run.token.reason or "cancelled"
        job = run.claimed.job
        log.error("handler of job %s ignored its %s for %.0fs; attempt %s ended without it, thread abandoned",
                  job.id, reason, self.stop_grace_s, job.attempt_id)
        if reason != "timeout":
            # cancelled, lease lost or released: the job is no longer this attempt's, finalize records it stale
            self._put_outcome(store.Outcome(job.id, job.attempt_id, run.claimed.entry_id, ok=False,
                                            error_code=reason if reason in ("cancelled", "lease_lost") else
                                            "lease_lost", error_message=f"handler ignored {reason}"))
            return
        kind = self.app.kinds.get(job.kind)
        s = self.app.settings
        delay = kind.retry.delay(job.attempts, s.retry_base_seconds, s.retry_max_seconds) if kind else 1.0
        limit = kind.timeout_s if kind else "?"
        self._put_outcome(store.Outcome(job.id, job.attempt_id, run.claimed.entry_id, ok=False,
                                        error_code="timeout", error_message=f"handler exceeded its timeout of {limit}s",
                                        retryable=self.app.plugins.catalog.is_retryable("timeout"),
                                        retry_delay_s=delay))

    # ------------------------------------------------------------ finalize

    def _put_outcome(self, outcome: store.Outcome) -> None:
        with self._lock:
            self._outcomes.append(outcome)
            self._finalizer_wake.notify()
            self._slot_freed()

    def _take_outcomes(self, limit: int = 500) -> list[store.Outcome]:
        """Everything awaiting its commit (the caller's lock held)."""
        batch: list[store.Outcome] = []
        while self._outcomes and len(batch) < limit:
            batch.append(self._outcomes.popleft())
        return batch

    def _finalize_loop(self) -> None:
        while True:
            with self._lock:
                acks, self._acks = self._acks, []
            if acks:
                self._ack(acks)
            if self._deferred:
                self._retry_deferred()
            with self._lock:
                if not self._outcomes:
                    if self._done.is_set() and not self._acks:
                        if self._deferred:
                            log.error("%d outcome(s) of unreachable tenant databases not recorded at shutdown; "
                                      "their leases expire and the jobs run again",
                                      sum(len(d[1]) for d in self._deferred))
                        return
                    if not self._acks:
                        self._finalizer_wake.wait(0.2)
                    continue
                first_seen = time.monotonic()
                # group commit: when more attempts are about to finish, wait a moment and finalize them
                # together; when the reader is about to claim, it commits them with its claim instead
                while self._outcomes and len(self._outcomes) < 500:
                    waited = time.monotonic() - first_seen
                    if self._reader_cycling and waited < self.reader_defer_s:
                        self._finalizer_wake.wait(self.reader_defer_s - waited)
                        continue
                    unfinished = any(not r.outcome_sent for r in self._running.values())
                    if not unfinished or waited >= self.finalize_linger_s:
                        break
                    self._finalizer_wake.wait(self.finalize_linger_s - waited)
                batch = self._take_outcomes()
            if batch:
                self._finalize(batch)

    def _finalize(self, batch: list[store.Outcome]) -> None:
        if self._tenancy is not None:
            self._finalize_tenants(batch)
            return
        delay = 0.2
        while True:
            try:
                done, _events = store.finalize(self.app.engine, batch, stream=self.app.settings.stream_key,
                                              ack=self._ack_in_tx)
                break
            except Exception as exc:  # DB down: hold the outcomes; fencing keeps a late commit safe
                log.error("finalize failed for %d outcomes: %s; retrying in %.1fs", len(batch), exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        if self._ack_in_tx is None:
            self._ack([d.entry_id for d in done])
        self._finalized(batch, done)

    def _finalize_tenants(self, batch: list[store.Outcome]) -> None:
        """Commit each tenant's outcomes in its database; a failing database's wait for a retry."""
        with self._lock:
            apps = {o.job_id: r.app for o in batch if (r := self._running.get(o.job_id)) is not None}
        groups: dict[int, tuple[Conveyor, list[store.Outcome]]] = {}
        for o in batch:
            app = apps.get(o.job_id)
            if app is None:  # released or forgotten meanwhile: nothing holds it any more
                log.warning("outcome of job %s attempt %s has no held job; dropped", o.job_id, o.attempt_id)
                continue
            groups.setdefault(id(app), (app, []))[1].append(o)
        for app, outcomes in groups.values():
            try:
                done, _events = store.finalize(app.engine, outcomes, stream=self.app.settings.stream_key)
            except Exception as exc:  # that database is down: hold its outcomes; fencing keeps a late commit safe
                delay = min(self._defer_s.get(app.tenant_key, 0.1) * 2, 10.0)
                self._defer_s[app.tenant_key] = delay
                log.error("finalize failed for %d outcomes of tenant %s: %s; retrying in %.1fs", len(outcomes),
                          app.tenant_key, exc, delay)
                with self._lock:
                    self._deferred.append((time.monotonic() + delay, outcomes))
                continue
            self._defer_s.pop(app.tenant_key, None)
            self._ack([d.entry_id for d in done])
            self._finalized(outcomes, done)

    def _retry_deferred(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [o for at, outs in self._deferred if at <= now for o in outs]
            self._deferred = [(at, outs) for at, outs in self._deferred if at > now]
        if due:
            self._finalize_tenants(due)

    def _finalized(self, batch: list[store.Outcome], done: list[store.Finalized]) -> None:
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
        with self._lock:
            finished = {o.job_id: self._running.pop(o.job_id, None) for o in batch}
            self._lock.notify_all()
            self._slot_freed()  # fewer held jobs: the cap on them may have kept slots closed
        self._progressed = True
        m = get_metrics()
        if m is not None:
            now = time.monotonic()
            for d in done:
                run = finished.get(d.job_id)
                if run is not None:
                    m.attempts.labels(run.claimed.job.kind, d.action).observe(now - run.started)
            m.in_flight.set(self.in_flight)

    def _ack(self, entry_ids: list[str]) -> None:
        try:
            self.app.queue.ack(entry_ids)
        except Exception as exc:  # the entries are reclaimed later, found final, and acked then
            self.stats.queue_errors += 1
            log.warning("ack of %d entries failed: %s", len(entry_ids), exc)

    # ------------------------------------------------------------ shutdown

    def _shutdown(self) -> None:
        deadline = time.monotonic() + (0 if self.burst else self.shutdown_grace_s)
        with self._lock:
            while self._running and time.monotonic() < deadline:
                self._lock.wait(min(0.2, max(0.01, deadline - time.monotonic())))
            leftover = {j: r.claimed.job.attempt_id for j, r in self._running.items() if not r.outcome_sent}
            for j in leftover:  # their late outcomes are dropped and the heartbeat stops renewing them
                self._running[j].outcome_sent = True
        if leftover:
            released: list[str] = []
            with self._lock:
                by_app = self._by_app([self._running[j] for j in leftover])
            for app, group in by_app:
                held = {r.claimed.job.id: r.claimed.job.attempt_id for r in group}
                try:
                    done = store.release(app.engine, self.name, held, stream=self.app.settings.stream_key)
                    released += done
                    self.stats.released += len(done)
                    self._ack([self._running[j].claimed.entry_id for j in done if j in self._running])
                except Exception as exc:
                    log.error("release of %d jobs failed (%s); their leases expire and peers reclaim them",
                              len(held), exc)
            with self._lock:
                for j in leftover:
                    r = self._running.pop(j, None) if j in released else self._running.get(j)
                    if r is not None:
                        r.token.cancel("released")
        # let the finalizer commit what is already done
        t_end = time.monotonic() + 5.0
        while (self._outcomes or self._deferred) and time.monotonic() < t_end:
            time.sleep(0.02)
        self._done.set()
        with self._lock:
            slot_threads = len(self._slot_threads)
        for _ in range(slot_threads):
            self._work.put(None)
        for t in self._threads:
            t.join(timeout=10)
        try:
            presence.stopped(self.app.engine, self.name)
        except Exception:
            pass
        log.info("worker stopped name=%s stats=%s", self.name, self.stats)
