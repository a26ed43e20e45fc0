"""The sandbox's Prometheus families: runs by backend and status, and the time a box costs around its program."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from conveyor.plugin_api import Metrics

F = TypeVar("F", bound=Callable[..., Any])


def families(m: Metrics) -> tuple[Any, Any]:
    """``(runs, overhead seconds)``, declared on first use."""
    return (m.counter("conveyor_sandbox_runs_total", "Sandbox runs by backend and status.", ("sandbox", "status")),
            m.histogram("conveyor_sandbox_overhead_seconds", "Start-up and tear-down of a box: the run's time on "
                        "the host minus its program's wall time.", ("sandbox",),
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)))


def measured(run: F) -> F:
    """Count each run of a backend's ``run`` method and how long the box took around the program."""
    @functools.wraps(run)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.monotonic()
        result = run(self, *args, **kwargs)
        from conveyor.plugin_api import get_metrics
        m = get_metrics()
        if m is not None:
            runs, overhead = families(m)
            runs.labels(self.id, result.status.value).inc()
            overhead.labels(self.id).observe(max(0.0, time.monotonic() - t0 - result.wall_ms / 1000))
        return result
    return wrapper  # type: ignore[return-value]
