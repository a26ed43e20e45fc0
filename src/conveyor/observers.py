"""Committed job events, fanned out to in-process observers (``conveyor_on_event`` plugins)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from conveyor.models import iso

log = logging.getLogger("conveyor.observers")

Listener = Callable[[dict[str, Any]], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def subscribe(listener: Listener) -> None:
    """Call ``listener(event)`` for every event committed in this process (once per listener)."""
    with _lock:
        if listener not in _listeners:
            _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    """Stop calling a listener."""
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def publish(rows: Iterable[dict[str, Any]]) -> None:
    """Hand committed event rows to every listener; a listener's exception is logged, never raised."""
    with _lock:
        listeners = list(_listeners)
    if not listeners:
        return
    for row in rows:
        event = {"job_id": row["job_id"], "attempt_id": row.get("attempt_id", 0), "action": row["action"],
                 "payload": row.get("payload") or {}, "file_id": row.get("file_id"),
                 "created_at": iso(row["created_at"]) if isinstance(row.get("created_at"), datetime)
                 else row.get("created_at")}
        for fn in listeners:
            try:
                fn(event)
            except Exception as exc:
                log.error("event observer %r failed: %s", fn, exc)
