"""Prometheus metrics: event counters, attempt durations, queue and outbox gauges.

Labels are low-cardinality (action, kind, outcome, role), never a job id.
Enabled per process with ``CONVEYOR_METRICS_PORT``; needs the ``metrics`` extra.
"""

from __future__ import annotations

import threading
from typing import Any

from conveyor import observers
from conveyor.errors import ConfigError

_lock = threading.Lock()
_instance: Metrics | None = None


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
        self.queue = prom.Gauge("conveyor_queue_entries", "Queue entries by state (scheduler's view).",
                                ["state"], registry=r)
        self.outbox_pending = prom.Gauge("conveyor_outbox_pending", "Outbox rows not yet published.", registry=r)
        self._server: Any = None

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
            observers.subscribe(_instance.on_event)
        if port:
            _instance.serve(port)
        return _instance
