"""The dispatcher: moves pending outbox rows to the queue; never drops one.

``Dispatcher`` drains one database's outbox. ``FleetDispatcher`` drains the outbox of every
registered tenant database of a database-per-tenant deployment, round-robin.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, select, update

from conveyor.db import utcnow
from conveyor.errors import Unreachable
from conveyor.metrics import get_metrics
from conveyor.notify import OUTBOX_CHANNEL, TENANT_OUTBOX_CHANNEL, Listener
from conveyor.queue import Message, Queue
from conveyor.schema import outbox
from conveyor.tenancy import TenantKey

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.jobstore import JobStore

log = logging.getLogger("conveyor.dispatcher")

@dataclass(frozen=True)
class DispatchRound:
    """What one dispatch round did."""

    published: int
    failed: int
    error: str | None = None


def _backoff(attempts: int, cap: float) -> float:
    return min(cap, 0.5 * (2 ** min(attempts, 20))) * random.uniform(0.5, 1.0)


class Dispatcher:
    """Publishes due outbox rows in batches, stamping ``dispatched_at`` and the entry id."""

    def __init__(self, store: JobStore, queue: Queue, *, batch: int = 500, maxlen: int | None = 200_000,
                 backoff_cap_s: float = 30.0, on_round: object | None = None) -> None:
        self.store = store
        self.engine = store.engine
        self.queue = queue
        self.batch = batch
        self.maxlen = maxlen
        self.backoff_cap_s = backoff_cap_s
        self._stop = threading.Event()
        self.published_total = 0
        self.failures_total = 0

    def run_once(self) -> DispatchRound:
        """Publish one batch of due rows; on queue failure keep them pending with a backoff."""
        now = utcnow()
        with self.engine.begin() as conn:
            rows = self.store.pending_outbox(conn, now, self.batch)
            if not rows:
                return DispatchRound(0, 0)
            msgs = [Message(r.job_id, int(r.message.get("priority", 0)), r.message.get("fields", {})) for r in rows]
            try:
                entry_ids = self.queue.publish(msgs, self.maxlen, conn=conn)
            except Exception as exc:  # any queue failure: keep every row, count, back off
                err = f"{type(exc).__name__}: {exc}"[:2000]
                conn.execute(update(outbox).where(outbox.c.id == bindparam("oid")).values(
                    attempts=bindparam("n"), last_error=err, next_attempt_at=bindparam("due")),
                    [{"oid": r.id, "n": r.attempts + 1,
                      "due": now + timedelta(seconds=_backoff(r.attempts, self.backoff_cap_s))} for r in rows])
                self.failures_total += len(rows)
                m = get_metrics()
                if m is not None:
                    m.dispatch_failures.inc(len(rows))
                log.warning("dispatch failed rows=%d error=%s", len(rows), err)
                return DispatchRound(0, len(rows), err)
            ev = self.store.mark_dispatched(conn, rows, entry_ids, now)
        self.store.observers.publish(ev)
        self.queue.wake()
        self.published_total += len(rows)
        return DispatchRound(len(rows), 0)

    def next_due(self) -> datetime | None:
        """When the earliest pending row becomes due."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.min(outbox.c.next_attempt_at))
                                .where(outbox.c.status == "pending")).scalar()

    def pending_count(self) -> int:
        """Rows not yet published."""
        return self.store.count_pending_outbox()

    def stop(self) -> None:
        """Ask the loop to end after the current round."""
        self._stop.set()
        self.store.pending.notify()

    def run(self, idle_max_s: float = 0.05) -> None:
        """Loop until stopped: publish while there is work, wait (woken by submits) when idle."""
        listener = Listener(self.engine, OUTBOX_CHANNEL)
        try:
            self._loop(idle_max_s, listener)
        finally:
            listener.close()
        log.info("dispatcher stopped published=%d", self.published_total)

    def _loop(self, idle_max_s: float, listener: Listener) -> None:
        idle = 0.005
        failures = 0
        while not self._stop.is_set():
            try:
                r = self.run_once()
            except Exception as exc:  # the database itself is down: wait and try again
                log.error("dispatcher round failed: %s", exc)
                failures += 1
                self._stop.wait(min(self.backoff_cap_s, 0.2 * 2 ** min(failures, 8)))
                continue
            if r.published and r.published >= self.batch:
                idle = 0.005
                continue
            if r.failed:
                failures += 1
                self._stop.wait(min(self.backoff_cap_s, 0.2 * 2 ** min(failures, 8)) * random.uniform(0.5, 1))
                continue
            failures = 0
            if r.published:
                idle = 0.005
            wait = idle
            due = None
            try:
                due = self.next_due()
            except Exception:
                pass
            if due is not None:
                wait = max(0.005, min(wait, (due - utcnow()).total_seconds()))
            if listener.usable:
                listener.wait(wait)  # a NOTIFY from any process's commit wakes us at once
            else:
                self.store.pending.wait(wait, self._stop)
            idle = min(idle * 2, idle_max_s if not listener.usable else 0.5)


def run_until_empty(dispatcher: Dispatcher, timeout_s: float = 30.0, *, strict: bool = False) -> int:
    """Publish every currently due row (tests, ``--once``); returns how many.

    With ``strict``, a round the queue refused raises ``Unreachable`` (the rows stay pending).
    """
    total = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = dispatcher.run_once()
        total += r.published
        if strict and r.failed:
            raise _refused(r, total)
        if r.published == 0:
            break
    return total


def _refused(r: DispatchRound, published: int) -> Unreachable:
    return Unreachable(f"{r.failed} outbox row(s) could not be published ({published} were): {r.error}. "
                       "They stay pending; run again once the queue answers")


@dataclass
class _TenantState:
    """When to poll one tenant database next, and how long it has been quiet or failing."""

    next_at: float = 0.0
    idle: float = 0.005
    failures: int = 0
    published: int = 0
    last_error: str | None = field(default=None, repr=False)


class FleetDispatcher:
    """Publishes the outboxes of every registered tenant database to the one queue, round-robin.

    Each round gives every due tenant database one batch (``batch`` rows), starting one
    database further each round, so a tenant with a backlog of thousands does not delay
    another's single job by more than one batch. A quiet database is polled again after
    a wait that doubles from 5 ms up to ``idle_max_s``; one that published is polled again
    at once; a submit in this process wakes every database. A database that cannot be
    reached, or whose rows the queue refuses, backs off on its own while the others go on.
    The registry is read again every ``refresh_s`` seconds, so an added tenant is served
    without a restart.
    """

    def __init__(self, app: Conveyor, *, batch: int = 500, maxlen: int | None = 200_000,
                 backoff_cap_s: float = 30.0, idle_max_s: float = 0.25, refresh_s: float = 5.0) -> None:
        tenancy = app.tenancy
        if tenancy is None:
            raise ValueError("FleetDispatcher serves a database-per-tenant deployment; use Dispatcher")
        self.app = app
        self.tenancy = tenancy
        self.queue = app.queue
        self.batch = batch
        self.maxlen = maxlen
        self.backoff_cap_s = backoff_cap_s
        self.idle_max_s = idle_max_s
        self.refresh_s = refresh_s
        self._state: dict[Any, _TenantState] = {}
        self._keys: list[Any] = []
        self._keys_at = -1e18
        self._turn = 0
        self._stop = threading.Event()
        self.published_total = 0
        self.failures_total = 0

    def _tenants(self) -> list[Any]:
        now = time.monotonic()
        if now - self._keys_at >= self.refresh_s:
            try:
                self._keys = self.tenancy.registered(refresh=True)
                self._keys_at = now
            except Exception as exc:  # the control database is down: serve the tenants known so far
                log.error("cannot read the tenant registry (%s); serving the %d tenants known", exc,
                          len(self._keys))
                self._keys_at = now - self.refresh_s + 1.0
        return self._keys

    def _dispatcher(self, key: Any) -> Dispatcher:
        return Dispatcher(self.tenancy.app_for(key, check=False).store, self.queue, batch=self.batch,
                          maxlen=self.maxlen, backoff_cap_s=self.backoff_cap_s)

    def run_once(self, *, force: bool = False) -> DispatchRound:
        """One round: one batch from every tenant database that is due (every one with ``force``)."""
        keys = self._tenants()
        if not keys:
            return DispatchRound(0, 0)
        start = self._turn % len(keys)
        self._turn += 1
        published = failed = 0
        error = None
        for key in keys[start:] + keys[:start]:
            st = self._state.setdefault(key, _TenantState())
            now = time.monotonic()
            if not force and now < st.next_at:
                continue
            try:
                r = self._dispatcher(key).run_once()
            except Exception as exc:  # this tenant's database is down
                st.failures += 1
                st.next_at = now + min(self.backoff_cap_s, 0.2 * 2 ** min(st.failures, 8)) * random.uniform(0.5, 1)
                st.last_error = f"{type(exc).__name__}: {exc}"[:500]
                log.error("dispatch round of tenant %s failed: %s", key, st.last_error)
                continue
            published += r.published
            failed += r.failed
            st.published += r.published
            if r.failed:
                error = r.error
                st.failures += 1
                st.next_at = now + min(self.backoff_cap_s, 0.2 * 2 ** min(st.failures, 8)) * random.uniform(0.5, 1)
            elif r.published:
                st.failures, st.idle, st.next_at = 0, 0.005, now
            else:
                st.failures = 0
                st.idle = min(st.idle * 2, self.idle_max_s)
                st.next_at = now + st.idle
        self.published_total += published
        self.failures_total += failed
        return DispatchRound(published, failed, error)

    def pending_count(self) -> int:
        """Rows not yet published, over every registered tenant database."""
        return sum(self._dispatcher(k).pending_count() for k in self.tenancy.registered(refresh=True))

    def stop(self) -> None:
        """Ask the loop to end after the current round."""
        self._stop.set()
        self.app.store.pending.notify()

    def _announced(self, payloads: list[str]) -> None:
        """Tenant databases announced on the control database: poll them at the next round."""
        for p in payloads:
            tenant, _, org = p.partition("/")
            st = self._state.get(TenantKey(tenant, org or None))
            if st is None:
                self._keys_at = -1e18  # a tenant not known yet: read the registry again
                continue
            st.next_at, st.idle = 0.0, 0.005

    def run(self) -> None:
        """Loop until stopped."""
        log.info("fleet dispatcher started (%s)", self.tenancy.mode)
        # on PostgreSQL a tenant's submit announces itself on the control database (Conveyor.announce)
        listener = Listener(self.app.engine, TENANT_OUTBOX_CHANNEL)
        force = True
        try:
            while not self._stop.is_set():
                r = self.run_once(force=force)
                force = False
                if r.published:
                    continue  # someone published: go round again at once (quiet ones are still skipped)
                now = time.monotonic()
                due = min((st.next_at for st in self._state.values()), default=now + self.idle_max_s)
                wait = min(max(0.002, due - now), self.idle_max_s)
                got = listener.payloads(wait) if listener.usable else None
                if got is not None:
                    self._announced(got)
                    continue
                if self._stop.is_set():
                    break
                woken = self.app.store.pending.wait(wait, self._stop)
                force = woken  # a submit in this process: look at every database now
        finally:
            listener.close()
        log.info("fleet dispatcher stopped published=%d", self.published_total)


def run_fleet_until_empty(dispatcher: FleetDispatcher, timeout_s: float = 30.0, *, strict: bool = False) -> int:
    """Publish every currently due row of every tenant database (``--once``); returns how many.

    With ``strict``, a round the queue refused raises ``Unreachable`` (the rows stay pending).
    """
    total = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = dispatcher.run_once(force=True)
        total += r.published
        if strict and r.failed:
            raise _refused(r, total)
        if r.published == 0:
            break
    return total
