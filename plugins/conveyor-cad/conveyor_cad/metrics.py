"""The CAD plugin's Prometheus families: conversions by format and status, and how long they take."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor_cad.formats import FORMATS

if TYPE_CHECKING:
    from conveyor.plugin_api import Metrics


def families(m: Metrics) -> tuple[Any, Any]:
    """``(conversions, seconds)``, declared on first use."""
    return (m.counter("conveyor_cad_conversions_total", "CAD conversions by input format and final status.",
                      ("format", "status")),
            m.histogram("conveyor_cad_conversion_seconds", "Fetch to publish of one conversion, by format.",
                        ("format",)))


def observe(fmt: str | None, status: str, seconds: float) -> None:
    """Count one conversion attempt's end, if this process has metrics (an unknown format counts as ``other``)."""
    from conveyor.plugin_api import get_metrics
    m = get_metrics()
    if m is None:
        return
    label = fmt if fmt in FORMATS else "other"  # a format name comes from a file: keep the label set fixed
    conversions, secs = families(m)
    conversions.labels(label, status).inc()
    secs.labels(label).observe(seconds)
