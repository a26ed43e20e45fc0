"""The dispatcher: moves pending outbox rows to the queue; never drops one."""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam, func, insert, select, update

from conveyor import observers, store_postgres
from conveyor.db import utcnow
from conveyor.metrics import get_metrics
from conveyor.models import EventAction
from conveyor.notify import OUTBOX_CHANNEL, Listener
from conveyor.queue import Message, Queue
from conveyor.schema import events, outbox

log = logging.getLogger("conveyor.dispatcher")

_WAKE = threading.Condition()


def wake() -> None:
    """Tell dispatchers in this process that new rows are pending."""
    with _WAKE:
        _WAKE.notify_all()


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

    def __init__(self, engine: Engine, queue: Queue, *, batch: int = 500, maxlen: int | None = 200_000,
                 backoff_cap_s: float = 30.0, on_round: object | None = None) -> None:
        self.engine = engine
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
        stmt = (select(outbox.c.id, outbox.c.job_id, outbox.c.message, outbox.c.attempts)
                .where(outbox.c.status == "pending", outbox.c.next_attempt_at <= now)
                .order_by(outbox.c.id).limit(self.batch))
        if self.engine.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            rows = conn.execute(stmt).all()
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
            ev = [{"job_id": r.job_id, "attempt_id": 0, "action": EventAction.DISPATCHED.value,
                   "payload": {"stream_entry_id": e, "outbox_id": r.id}, "created_at": now, "file_id": None}
                  for r, e in zip(rows, entry_ids)]
            if store_postgres.is_postgres(conn):
                store_postgres.mark_dispatched(conn, [(r.id, e) for r, e in zip(rows, entry_ids)], now)
            else:
                conn.execute(update(outbox).where(outbox.c.id == bindparam("oid")).values(
                    status="dispatched", dispatched_at=now, stream_entry_id=bindparam("eid"),
                    attempts=bindparam("n")),
                    [{"oid": r.id, "eid": e, "n": r.attempts + 1} for r, e in zip(rows, entry_ids)])
                conn.execute(insert(events), ev)
        observers.publish(ev)
        wake_readers = getattr(self.queue, "wake", None)
        if callable(wake_readers):
            wake_readers()
        self.published_total += len(rows)
        return DispatchRound(len(rows), 0)

    def next_due(self) -> datetime | None:
        """When the earliest pending row becomes due."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.min(outbox.c.next_attempt_at))
                                .where(outbox.c.status == "pending")).scalar()

    def pending_count(self) -> int:
        """Rows not yet published."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(outbox.c.status == "pending")).scalar() or 0)

    def stop(self) -> None:
        """Ask the loop to end after the current round."""
        self._stop.set()
        wake()

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
                with _WAKE:
                    if not self._stop.is_set():
                        _WAKE.wait(wait)
            idle = min(idle * 2, idle_max_s if not listener.usable else 0.5)


def run_until_empty(dispatcher: Dispatcher, timeout_s: float = 30.0) -> int:
    """Publish every currently due row (tests, ``--once``); returns how many."""
    total = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = dispatcher.run_once()
        total += r.published
        if r.published == 0:
            break
    return total
