"""Prometheus metrics: event counters, attempt durations, queue and outbox gauges, and what plugins add.

Labels are low-cardinality, never an id, a tenant or a path: a family may only use the
label names of ``BOUNDED_LABELS``, each of which takes its values from a small fixed set.
Enabled per process with ``CONVEYOR_METRICS_PORT``; needs the ``metrics`` extra. Plugins
declare their families in the ``conveyor_metrics`` hook, so ``/metrics`` lists them from
the start, and fetch them again where they count (``counter``/``gauge``/``histogram``
return the family already declared under a name).
"""

from __future__ import annotations

import threading
from typing import Any

from conveyor.errors import ConfigError

_lock = threading.Lock()
_instance: Metrics | None = None

#: label names a family may have; each takes its values from a small, fixed set
BOUNDED_LABELS = frozenset({"action", "kind", "outcome", "state", "status", "verdict", "language", "format",
                            "sandbox", "stage", "method", "route", "converter", "what"})


class Metrics:
    """The metric families of one process, on their own registry."""

    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ModuleNotFoundError:
            raise ConfigError("metrics need prometheus_client: pip install 'conveyor-jobs[metrics]', "
                              "or unset CONVEYOR_METRICS_PORT") from None
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.events = prom.Counter("conveyor_job_events_total", "Committed job events by action.",
                                   ["action"], registry=r)
        self.attempts = prom.Histogram("conveyor_attempt_seconds", "Claim to finalize, per attempt.",
                                       ["kind", "outcome"], registry=r,
                                       buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800))
        self.dispatch_failures = prom.Counter("conveyor_dispatch_failures_total",
                                              "Outbox rows a queue failure kept pending.", registry=r)
        self.in_flight = prom.Gauge("conveyor_worker_in_flight", "Jobs this worker holds.", registry=r)
        self.handler = prom.Histogram("conveyor_handler_seconds", "Handler run time, per attempt, by whether it "
                                      "returned or raised (the worker's Metrics middleware).", ["kind", "outcome"],
                                      registry=r)
        self.queue = prom.Gauge("conveyor_queue_entries", "Queue entries by state (scheduler's view).",
                                ["state"], registry=r)
        self.outbox_pending = prom.Gauge("conveyor_outbox_pending", "Outbox rows not yet published.", registry=r)
        self.scheduler_actions = prom.Counter("conveyor_scheduler_actions_total",
                                              "What the scheduler leader repaired or collected, by what.", ["what"],
                                              registry=r)
        self._families: dict[str, Any] = {}
        self._families_lock = threading.Lock()
        self._server: Any = None
        self.api_requests = self.counter("conveyor_api_requests_total", "HTTP API requests by route and status.",
                                         ("method", "route", "status"))

    def _family(self, cls: Any, name: str, doc: str, labels: tuple[str, ...], **kw: Any) -> Any:
        with self._families_lock:
            existing = self._families.get(name)
            if existing is not None:
                return existing
            unbounded = sorted(set(labels) - BOUNDED_LABELS)
            if unbounded:
                raise ValueError(f"metric {name}: label(s) {', '.join(unbounded)} are not bounded; use one of "
                                 f"{', '.join(sorted(BOUNDED_LABELS))}")
            family = cls(name, doc, list(labels), registry=self.registry, **kw)
            self._families[name] = family
            return family

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
        """The counter ``name`` (declared here on first use)."""
        return self._family(self._prom.Counter, name, doc, labels)

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
        """The gauge ``name`` (declared here on first use)."""
        return self._family(self._prom.Gauge, name, doc, labels)

    def histogram(self, name: str, doc: str, labels: tuple[str, ...] = (),
                  buckets: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120, 600)) -> Any:
        """The histogram ``name`` (declared here on first use)."""
        return self._family(self._prom.Histogram, name, doc, labels, buckets=buckets)

    def on_event(self, event: dict[str, Any]) -> None:
        """Count one committed event (an observers listener)."""
        self.events.labels(event["action"]).inc()

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Expose ``/metrics`` over HTTP on ``port``."""
        if self._server is None:
            self._server = self._prom.start_http_server(port, addr=addr, registry=self.registry)

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return bytes(self._prom.generate_latest(self.registry))


def get_metrics() -> Metrics | None:
    """This process's metrics, if enabled."""
    return _instance


def enable(port: int | None = None) -> Metrics:
    """Create this process's metrics (once), count every committed event, and serve them if ``port``."""
    global _instance
    with _lock:
        if _instance is None:
            _instance = Metrics()
            from conveyor.plugins import get_plugins
            get_plugins().call_each("conveyor_metrics", metrics=_instance)  # a broken plugin is recorded, not fatal
        if port:
            _instance.serve(port)
        return _instance
