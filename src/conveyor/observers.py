"""Committed job events, fanned out to one deployment's in-process observers (``conveyor_on_event`` plugins).

Each deployment's ``JobStore`` owns an ``Observers`` (a tenant database's store shares its
control store's), and every write reports the events it committed there, so two
deployments in one process see only their own events. The process's metrics, when
enabled, count the events of every deployment.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from conveyor.metrics import get_metrics
from conveyor.models import event_json

log = logging.getLogger("conveyor.observers")

Listener = Callable[[dict[str, Any]], None]


class Observers:
    """The listeners of one deployment's committed events."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every event this deployment commits in this process."""
        with self._lock:
            if listener not in self._listeners:
                self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def publish(self, rows: Iterable[dict[str, Any]]) -> None:
        """Hand committed event rows to every listener and the process's metrics; never raises."""
        metrics = get_metrics()
        with self._lock:
            listeners = list(self._listeners)
        if metrics is not None:
            listeners.append(metrics.on_event)
        if not listeners:
            return
        for row in rows:
            event = event_json(row)
            for fn in listeners:
                try:
                    fn(event)
                except Exception as exc:
                    log.error("event observer %r failed: %s", fn, exc)
