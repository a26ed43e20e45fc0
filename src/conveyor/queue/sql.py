"""The embedded queue: a table in the job database (``CONVEYOR_QUEUE_URL=sql``).

PostgreSQL readers lock rows with ``FOR UPDATE SKIP LOCKED``; SQLite serialises
writers with ``BEGIN IMMEDIATE``, so both are correct under concurrency.
Readers in the same process are woken by publish; other processes poll with a
short adaptive wait.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, select, update

from conveyor.db import utcnow
from conveyor.notify import QUEUE_CHANNEL, Listener, Wakeup, notify
from conveyor.queue.base import START_CURSOR, Entry, Message, Pressure, Queue, Reclaimed
from conveyor.schema import queue_entries as q

_FIFO_EVERY = 5  # every Nth read ignores priority so low bands are never starved


_ACK = delete(q).where(q.c.id.in_(bindparam("ids", expanding=True)), q.c.consumer.is_not(None))


def _take_stmt(pg: bool, fifo: bool) -> Any:
    order = (q.c.id,) if fifo else (q.c.priority.desc(), q.c.id)
    sub = (select(q.c.id).where(q.c.stream == bindparam("t_stream"), q.c.consumer.is_(None))
           .order_by(*order).limit(bindparam("t_n")))
    if pg:
        sub = sub.with_for_update(skip_locked=True)
    return (update(q).where(q.c.id.in_(sub.scalar_subquery()))
            .values(consumer=bindparam("t_consumer"), delivered_at=bindparam("t_now"), deliveries=q.c.deliveries + 1)
            .returning(q.c.id, q.c.job_id, q.c.fields, q.c.deliveries, q.c.priority))


#: prebuilt read statements: (postgresql?, fifo round?) → statement
_TAKE = {(pg, fifo): _take_stmt(pg, fifo) for pg in (False, True) for fifo in (False, True)}


class SqlQueue(Queue):
    """A stream as rows of ``conveyor_queue``; an entry is pending while ``consumer`` is set."""

    transactional = True

    def __init__(self, engine: Engine, stream: str = "conveyor:jobs", *, transactional: bool = True) -> None:
        self.url = "sql"
        self.engine = engine
        # False: the table lives in another database than the jobs (a database-per-tenant
        # deployment keeps it in the control database), so a caller's ``conn`` is never used
        self.transactional = transactional
        self.stream = stream
        self._reads = 0
        self._pg = engine.dialect.name == "postgresql"
        self._listener = Listener(engine, QUEUE_CHANNEL)
        self._published = Wakeup()  # this queue's publishes wake its readers; other processes' are polled for
        # elsewhere other processes' publishes are seen by polling; this bounds the added latency
        self.poll_max_s = 0.5 if self._listener.usable else 0.05

    def ensure_group(self) -> None:
        """The table is created by ``conveyor db init``."""

    def publish(self, messages: Sequence[Message], maxlen: int | None = None,
                conn: Connection | None = None) -> list[str]:
        """Insert one row per message in one statement (inside ``conn``'s transaction if given)."""
        if not messages:
            return []
        now = utcnow()
        rows = [{"stream": self.stream, "job_id": m.job_id, "priority": m.priority, "fields": dict(m.fields),
                 "enqueued_at": now, "deliveries": 0} for m in messages]
        stmt = q.insert().returning(q.c.id, sort_by_parameter_order=True)
        if conn is not None and self.transactional:
            ids = [r[0] for r in conn.execute(stmt, rows)]
            notify(conn, QUEUE_CHANNEL)
        else:
            with self.engine.begin() as own:
                ids = [r[0] for r in own.execute(stmt, rows)]
                notify(own, QUEUE_CHANNEL)
        self.wake()
        return [str(i) for i in ids]

    def wake(self) -> None:
        """Wake this queue's readers in this process (after the publishing transaction commits)."""
        self._published.notify()

    def take(self, conn: Connection, consumer: str, count: int) -> list[Entry]:
        """Deliver up to count entries inside the caller's transaction, without waiting."""
        self._reads += 1
        stmt = _TAKE[(self._pg, self._reads % _FIFO_EVERY == 0)]
        rows = list(conn.execute(stmt, {"t_stream": self.stream, "t_n": count, "t_consumer": consumer,
                                        "t_now": utcnow()}).all())
        rows.sort(key=lambda r: (-r.priority, r.id))
        return [Entry(str(r.id), r.job_id, dict(r.fields or {}), r.deliveries) for r in rows]

    def read(self, consumer: str, count: int, block_ms: int = 0) -> list[Entry]:
        """Deliver up to count entries, polling with a growing wait until block_ms passes."""
        if count <= 0:
            return []
        deadline = time.monotonic() + block_ms / 1000.0
        wait = 0.005
        while True:
            with self.engine.begin() as conn:
                got = self.take(conn, consumer, count)
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            self.wait(min(wait, left))
            wait = min(wait * 2, self.poll_max_s)

    def wait(self, seconds: float) -> None:
        """Sleep until a publish (in any process on PostgreSQL, through this queue elsewhere), or ``seconds``."""
        if self._listener.usable:
            self._listener.wait(seconds)
            return
        self._published.wait(seconds)

    def ack(self, entry_ids: Sequence[str], conn: Connection | None = None) -> int:
        """Delete acknowledged rows (inside ``conn``'s transaction if given)."""
        ids = [int(e) for e in entry_ids if e]
        if not ids:
            return 0
        if conn is not None and self.transactional:
            return conn.execute(_ACK, {"ids": ids}).rowcount or 0
        with self.engine.begin() as own:
            return own.execute(_ACK, {"ids": ids}).rowcount or 0

    def reclaim(self, consumer: str, min_idle_ms: int, cursor: str = START_CURSOR,
                count: int = 100) -> Reclaimed:
        """Take pending rows idle long enough, scanning ids from the cursor."""
        start = int(cursor.split("-")[0] or 0)
        cutoff = utcnow() - timedelta(milliseconds=min_idle_ms)
        sub = (select(q.c.id).where(q.c.stream == self.stream, q.c.consumer.is_not(None),
                                    q.c.delivered_at <= cutoff, q.c.id >= start)
               .order_by(q.c.id).limit(count + 1))
        if self._pg:
            sub = sub.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            ids = list(conn.execute(sub).scalars())
            take = ids[:count]
            rows: list[Any] = []
            if take:
                rows = list(conn.execute(
                    update(q).where(q.c.id.in_(take))
                    .values(consumer=consumer, delivered_at=utcnow(), deliveries=q.c.deliveries + 1)
                    .returning(q.c.id, q.c.job_id, q.c.fields, q.c.deliveries)).all())
        rows.sort(key=lambda r: r.id)
        nxt = str(ids[count]) if len(ids) > count else START_CURSOR
        return Reclaimed(nxt, [Entry(str(r.id), r.job_id, dict(r.fields or {}), r.deliveries) for r in rows], [])

    def touch(self, consumer: str, entry_ids: Sequence[str]) -> None:
        """Reset the idle clock of rows this consumer holds."""
        ids = [int(e) for e in entry_ids if e]
        if ids:
            with self.engine.begin() as conn:
                conn.execute(update(q).where(q.c.id.in_(ids), q.c.consumer == consumer)
                             .values(delivered_at=utcnow()))

    def held(self, entry_ids: Sequence[str]) -> set[str]:
        """Rows still present."""
        ids = [int(e) for e in entry_ids if e and e.isdigit()]
        if not ids:
            return set()
        with self.engine.connect() as conn:
            return {str(i) for i in conn.execute(select(q.c.id).where(q.c.id.in_(ids))).scalars()}

    def pressure(self) -> Pressure:
        """Exact counts from the table."""
        now = utcnow()
        with self.engine.connect() as conn:
            length, pending, oldest_pending, oldest_new = conn.execute(
                select(func.count(),
                       func.count(q.c.consumer),
                       func.min(q.c.enqueued_at).filter(q.c.consumer.is_not(None)),
                       func.min(q.c.enqueued_at).filter(q.c.consumer.is_(None)))
                .where(q.c.stream == self.stream)).one()
        if oldest_pending is not None:
            age, src = now - oldest_pending, "pending"
        elif oldest_new is not None:
            age, src = now - oldest_new, "undelivered"
        else:
            return Pressure(length, pending, length - pending, None, None, False)
        return Pressure(length, pending, length - pending, int(age.total_seconds() * 1000), src, False)

    def close(self) -> None:
        """Drop the listening connection."""
        self._listener.close()

    def trim(self, maxlen: int) -> int:
        """Delete the oldest rows beyond maxlen, pending or not (as XTRIM does)."""
        with self.engine.begin() as conn:
            keep_from = conn.execute(select(q.c.id).where(q.c.stream == self.stream)
                                     .order_by(q.c.id.desc()).offset(maxlen).limit(1)).scalar()
            if keep_from is None:
                return 0
            return conn.execute(delete(q).where(q.c.stream == self.stream, q.c.id <= keep_from)).rowcount or 0
