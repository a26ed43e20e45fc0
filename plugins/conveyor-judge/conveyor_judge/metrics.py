"""The judge's Prometheus families: verdicts by language, compile and run times."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.plugin_api import Metrics
    from conveyor_judge.verdicts import JudgeResult


def families(m: Metrics) -> tuple[Any, Any, Any]:
    """``(verdicts, compile seconds, run seconds)``, declared on first use."""
    return (m.counter("conveyor_judge_verdicts_total", "Judged submissions by language and verdict.",
                      ("language", "verdict")),
            m.histogram("conveyor_judge_compile_seconds", "Compile time of a submission, by language.",
                        ("language",)),
            m.histogram("conveyor_judge_run_seconds", "Wall time of one test run, by language.", ("language",)))


def observe(result: JudgeResult) -> None:
    """Count one judged submission, if this process has metrics."""
    from conveyor.plugin_api import get_metrics
    m = get_metrics()
    if m is None:
        return
    verdicts, compile_s, run_s = families(m)
    verdicts.labels(result.language, result.verdict.value).inc()
    if result.compile.time_ms:
        compile_s.labels(result.language).observe(result.compile.time_ms / 1000)
    for t in result.tests:
        run_s.labels(result.language).observe(t.wall_ms / 1000)
