"""An in-process queue for tests and single-process runs (``memory://NAME``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from conveyor.queue.base import START_CURSOR, Entry, Message, Pressure, Queue, Reclaimed


@dataclass
class _Slot:
    message: Message
    enqueued: float
    consumer: str | None = None
    delivered: float = 0.0
    deliveries: int = 0
    acked: bool = False


class MemoryQueue(Queue):
    """A stream + consumer group held in a dict; blocking reads use a condition variable."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._cond = threading.Condition()
        self._entries: dict[int, _Slot] = {}
        self._next = 1
        self._undelivered: list[int] = []

    def ensure_group(self) -> None:
        """Nothing to create."""

    def publish(self, messages: Sequence[Message], maxlen: int | None = None,
                conn: Connection | None = None) -> list[str]:
        """Append entries and wake readers."""
        ids = []
        now = time.monotonic()
        with self._cond:
            for m in messages:
                eid = self._next
                self._next += 1
                self._entries[eid] = _Slot(m, now)
                self._undelivered.append(eid)
                ids.append(str(eid))
            self._cond.notify_all()
        if maxlen:
            self.trim(maxlen)
        return ids

    def read(self, consumer: str, count: int, block_ms: int = 0) -> list[Entry]:
        """Deliver the highest-priority undelivered entries, blocking up to block_ms."""
        deadline = time.monotonic() + block_ms / 1000.0
        with self._cond:
            while not self._undelivered:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            self._undelivered.sort(key=lambda i: (-self._entries[i].message.priority, i))
            take, self._undelivered = self._undelivered[:count], self._undelivered[count:]
            now = time.monotonic()
            out = []
            for eid in take:
                s = self._entries[eid]
                s.consumer, s.delivered, s.deliveries = consumer, now, s.deliveries + 1
                out.append(Entry(str(eid), s.message.job_id, dict(s.message.fields), s.deliveries))
            return out

    def ack(self, entry_ids: Sequence[str], conn: Connection | None = None) -> int:
        """Drop acknowledged entries from the pending list."""
        n = 0
        with self._cond:
            for e in entry_ids:
                s = self._entries.get(int(e))
                if s is not None and s.consumer is not None and not s.acked:
                    s.acked = True
                    del self._entries[int(e)]
                    n += 1
        return n

    def reclaim(self, consumer: str, min_idle_ms: int, cursor: str = START_CURSOR,
                count: int = 100) -> Reclaimed:
        """Take idle pending entries with ids after the cursor."""
        start = int(cursor.split("-")[0]) if cursor else 0
        now = time.monotonic()
        with self._cond:
            ids = sorted(i for i, s in self._entries.items()
                         if s.consumer is not None and i >= start and (now - s.delivered) * 1000 >= min_idle_ms)
            take = ids[:count]
            out = []
            for eid in take:
                s = self._entries[eid]
                s.consumer, s.delivered, s.deliveries = consumer, now, s.deliveries + 1
                out.append(Entry(str(eid), s.message.job_id, dict(s.message.fields), s.deliveries))
            nxt = START_CURSOR if len(ids) <= count else str(ids[count])
        return Reclaimed(nxt, out, [])

    def touch(self, consumer: str, entry_ids: Sequence[str]) -> None:
        """Reset idle time of held entries."""
        now = time.monotonic()
        with self._cond:
            for e in entry_ids:
                s = self._entries.get(int(e))
                if s is not None and s.consumer == consumer:
                    s.delivered = now

    def held(self, entry_ids: Sequence[str]) -> set[str]:
        """Entries still present."""
        with self._cond:
            return {e for e in entry_ids if e and e.isdigit() and int(e) in self._entries}

    def pressure(self) -> Pressure:
        """Exact figures."""
        now = time.monotonic()
        with self._cond:
            pending = [s for s in self._entries.values() if s.consumer is not None]
            und = [self._entries[i] for i in self._undelivered]
            if pending:
                age, src = max(now - s.enqueued for s in pending), "pending"
            elif und:
                age, src = max(now - s.enqueued for s in und), "undelivered"
            else:
                return Pressure(len(self._entries), 0, 0, None, None, False)
            return Pressure(len(self._entries), len(pending), len(und), int(age * 1000), src, False)

    def trim(self, maxlen: int) -> int:
        """Drop the oldest entries beyond maxlen, delivered or not (as XTRIM does)."""
        with self._cond:
            extra = len(self._entries) - maxlen
            if extra <= 0:
                return 0
            for eid in sorted(self._entries)[:extra]:
                del self._entries[eid]
            live = set(self._entries)
            self._undelivered = [i for i in self._undelivered if i in live]
            return extra


_SHARED: dict[str, MemoryQueue] = {}
_SHARED_LOCK = threading.Lock()


def shared_memory_queue(url: str) -> MemoryQueue:
    """One MemoryQueue per URL per process, so dispatcher and worker threads share it."""
    with _SHARED_LOCK:
        q = _SHARED.get(url)
        if q is None:
            q = _SHARED[url] = MemoryQueue(url)
        return q
