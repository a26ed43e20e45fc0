"""Committed job events, fanned out to in-process observers (``conveyor_on_event`` plugins).

An observer subscribes for one *group* of databases (``group=``) or for every database
(``group=None``: metrics). Each ``Conveyor`` puts its engine in a group of its own (a
tenant's engine joins its control ``Conveyor``'s group), so two deployments in one
process see only their own events; a write reports its events with the engine or
connection it used (``publish(rows, bind)``).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from conveyor.models import iso

log = logging.getLogger("conveyor.observers")

Listener = Callable[[dict[str, Any]], None]
_listeners: list[tuple[Listener, object | None]] = []
_groups: weakref.WeakKeyDictionary[Engine, object] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def join(engine: Engine, group: object) -> None:
    """Report the events written through ``engine`` to the observers of ``group``."""
    with _lock:
        _groups[engine] = group


def subscribe(listener: Listener, group: object | None = None) -> None:
    """Call ``listener(event)`` for every event committed in this process in ``group`` (None: in any)."""
    with _lock:
        if (listener, group) not in _listeners:
            _listeners.append((listener, group))


def unsubscribe(listener: Listener, group: object | None = None) -> None:
    """Stop calling a listener for ``group``."""
    with _lock:
        if (listener, group) in _listeners:
            _listeners.remove((listener, group))


def publish(rows: Iterable[dict[str, Any]], bind: Engine | Connection | None = None) -> None:
    """Hand committed event rows to the listeners of ``bind``'s group and the ungrouped ones; never raises.

    Without ``bind`` every listener is called.
    """
    engine = bind.engine if isinstance(bind, Connection) else bind
    with _lock:
        if not _listeners:
            return
        group = _groups.get(engine) if engine is not None else None
        listeners = [fn for fn, g in _listeners if g is None or bind is None or g is group]
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
