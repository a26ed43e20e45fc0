"""Cross-process wake-ups on PostgreSQL (LISTEN/NOTIFY), so idle loops block instead of polling.

A NOTIFY sent inside a transaction is delivered when it commits, so a woken
dispatcher or worker always sees the rows that woke it. On other databases the
loops fall back to a short adaptive wait.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import Connection, Engine, text

log = logging.getLogger("conveyor.notify")

OUTBOX_CHANNEL = "conveyor_outbox"
QUEUE_CHANNEL = "conveyor_queue"
#: on the control database of a database-per-tenant deployment: a tenant database has new outbox rows
TENANT_OUTBOX_CHANNEL = "conveyor_tenant_outbox"


class Wakeup:
    """An in-process wake-up: a deployment's writes tell its idle dispatchers that outbox rows are pending.

    Owned by the deployment's ``JobStore`` (a tenant database's store shares its control
    one's), so two deployments in one process never wake each other.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()

    def notify(self) -> None:
        """Wake every waiter now."""
        with self._cond:
            self._cond.notify_all()

    def wait(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Sleep up to ``timeout`` seconds or until notified (at once if ``stop`` is set); whether notified."""
        with self._cond:
            if stop is not None and stop.is_set():
                return False
            return self._cond.wait(timeout)


def notify(conn: Connection, channel: str) -> None:
    """Queue a notification for delivery when ``conn``'s transaction commits (PostgreSQL only)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"NOTIFY {channel}"))


def notify_now(engine: Engine, channel: str, payload: str) -> None:
    """Send one notification at once, outside any transaction (PostgreSQL only)."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})


class Listener:
    """A dedicated connection LISTENing on one channel; ``wait`` blocks until a notification or a timeout."""

    def __init__(self, engine: Engine, channel: str) -> None:
        self.engine = engine
        self.channel = channel
        self._raw: Any = None
        self._lock = threading.Lock()
        self._broken_until = 0.0

    @property
    def usable(self) -> bool:
        """Whether this database can deliver notifications."""
        return self.engine.dialect.name == "postgresql"

    def _connect(self) -> Any:
        raw = self.engine.raw_connection()
        pg: Any = raw.driver_connection
        pg.autocommit = True
        pg.execute(f"LISTEN {self.channel}")
        self._raw = raw
        return pg

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True if a notification arrived (False also on errors)."""
        if not self.usable or time.monotonic() < self._broken_until:
            time.sleep(timeout)
            return False
        with self._lock:
            try:
                pg = self._raw.driver_connection if self._raw is not None else self._connect()
                got = False
                for _ in pg.notifies(timeout=timeout, stop_after=1):
                    got = True
                # drain what else is pending so one burst of commits wakes us once
                for _ in pg.notifies(timeout=0):
                    pass
                return got
            except Exception as exc:  # the database went away: poll for a while, reconnect later
                log.warning("LISTEN %s failed (%s); polling instead", self.channel, exc)
                self.close()
                self._broken_until = time.monotonic() + 5.0
                return False

    def payloads(self, timeout: float) -> list[str] | None:
        """Block up to ``timeout`` seconds; the payloads that arrived (``[]``: none), None if it cannot listen."""
        if not self.usable or time.monotonic() < self._broken_until:
            return None
        with self._lock:
            try:
                pg = self._raw.driver_connection if self._raw is not None else self._connect()
                out = [n.payload for n in pg.notifies(timeout=timeout, stop_after=1)]
                out += [n.payload for n in pg.notifies(timeout=0)]
                return out
            except Exception as exc:
                log.warning("LISTEN %s failed (%s); polling instead", self.channel, exc)
                self.close()
                self._broken_until = time.monotonic() + 5.0
                return None

    def close(self) -> None:
        """Drop the listening connection."""
        raw, self._raw = self._raw, None
        if raw is not None:
            try:
                raw.invalidate()
            except Exception:
                pass
