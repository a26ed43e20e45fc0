"""The queue contract, shaped like a Redis Streams consumer group.

An entry carries a job id and a few routing fields, never the payload: the
database is the source of truth, the queue only says "look at this job".
Delivery is at-least-once; the claim CAS in the database decides who runs.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection


@dataclass(frozen=True)
class Message:
    """What the dispatcher publishes for one job."""

    job_id: str
    priority: int = 0
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """One delivered queue entry."""

    entry_id: str
    job_id: str
    fields: Mapping[str, str]
    deliveries: int = 1


@dataclass(frozen=True)
class Reclaimed:
    """One round of reclaiming idle entries: the next cursor, the entries, the ids gone from the stream."""

    cursor: str
    entries: list[Entry]
    deleted: list[str]


@dataclass(frozen=True)
class Pressure:
    """A snapshot of queue load (``conveyor queue pressure``)."""

    length: int
    pending: int
    lag: int | None  # None when the backend cannot tell; None is not 0
    oldest_age_ms: int | None
    oldest_age_source: str | None  # "pending" | "undelivered" | None when empty
    approx: bool

    def as_dict(self) -> dict[str, object]:
        """Plain JSON form."""
        return {"length": self.length, "pending": self.pending, "lag": self.lag,
                "oldest_age_ms": self.oldest_age_ms, "oldest_age_source": self.oldest_age_source,
                "approx": self.approx}


START_CURSOR = "0-0"


class Queue(abc.ABC):
    """A stream with one consumer group; every backend implements exactly this."""

    url: str
    #: True when the queue lives in the job database and accepts ``conn`` to act inside a transaction
    #: (``publish``, ``ack``, and ``take``, which the worker then uses instead of ``read``)
    transactional: bool = False
    #: the longest wait between a transactional queue's polls, in seconds (``wait``)
    poll_max_s: float = 0.05

    @abc.abstractmethod
    def ensure_group(self) -> None:
        """Create the stream and consumer group if missing, from the start of the stream."""

    @abc.abstractmethod
    def publish(self, messages: Sequence[Message], maxlen: int | None = None,
                conn: Connection | None = None) -> list[str]:
        """Append entries (stream capped approximately at ``maxlen``); returns their ids in order.

        ``conn`` is the dispatcher's open transaction on the job database; a backend
        living in that database publishes through it, so dispatch is atomic.
        """

    @abc.abstractmethod
    def read(self, consumer: str, count: int, block_ms: int = 0) -> list[Entry]:
        """Deliver up to ``count`` never-delivered entries to ``consumer``, waiting up to ``block_ms``."""

    @abc.abstractmethod
    def ack(self, entry_ids: Sequence[str], conn: Connection | None = None) -> int:
        """Acknowledge entries (they leave the pending list); returns how many were pending.

        ``conn``: as for ``publish``, used only by a transactional backend.
        """

    @abc.abstractmethod
    def reclaim(self, consumer: str, min_idle_ms: int, cursor: str = START_CURSOR,
                count: int = 100) -> Reclaimed:
        """Take pending entries idle at least ``min_idle_ms``, scanning from ``cursor``."""

    @abc.abstractmethod
    def touch(self, consumer: str, entry_ids: Sequence[str]) -> None:
        """Reset the idle time of entries this consumer holds (a heartbeat for the queue)."""

    @abc.abstractmethod
    def held(self, entry_ids: Sequence[str]) -> set[str]:
        """Which of these entries the queue still holds (undelivered or pending)."""

    @abc.abstractmethod
    def pressure(self) -> Pressure:
        """Length, pending count, lag and oldest age."""

    @abc.abstractmethod
    def trim(self, maxlen: int) -> int:
        """Cap the stream at about ``maxlen`` entries; returns how many were removed."""

    def take(self, conn: Connection, consumer: str, count: int) -> list[Entry]:
        """Deliver up to ``count`` entries inside ``conn``'s transaction, without waiting (transactional queues)."""
        raise NotImplementedError(f"{type(self).__name__} is not transactional: read() delivers its entries")

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, less when a publish may have landed (how a transactional queue is polled)."""
        time.sleep(seconds)

    def wake(self) -> None:
        """Wake this process's readers after a publish commits; nothing to do where reads block on the server."""

    def close(self) -> None:
        """Release connections."""
