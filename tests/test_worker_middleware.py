"""Middleware around every handler call: order, what a handler's logs carry, and the error policy."""

from __future__ import annotations

import io
import json
import logging

from conveyor.logs import JsonFormatter
from conveyor.worker import DEFAULT_MIDDLEWARE, Middleware


class Recorder(Middleware):
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name, self.seen = name, seen

    def around(self, ctx, kind, call):
        self.seen.append(f"{self.name} before {kind.name}")
        try:
            return call()
        finally:
            self.seen.append(f"{self.name} after")


def test_middleware_runs_around_the_handler_outermost_first(app, pipeline):
    seen: list[str] = []
    job = app.submit("conveyor.echo", {"x": 1})
    with pipeline(middleware=[Recorder("outer", seen), Recorder("inner", seen)]) as p:
        (done,) = p.wait([job])
    assert done.status.value == "succeeded" and done.result == {"x": 1}
    assert seen == ["outer before conveyor.echo", "inner before conveyor.echo", "inner after", "outer after"]


def test_a_handlers_own_log_records_carry_its_job_and_trace(app, pipeline):
    """The default chain's Tracing: JSON log lines written inside a handler name the job, attempt and trace."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("conveyor.testkinds")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        job = app.submit("test.log", {"message": "inside the handler"}, trace_id="trace-abc")
        with pipeline(middleware=DEFAULT_MIDDLEWARE) as p:
            (done,) = p.wait([job])
    finally:
        logger.removeHandler(handler)
    assert done.status.value == "succeeded", done.last_error
    [line] = [json.loads(x) for x in out.getvalue().splitlines() if "inside the handler" in x]
    assert line["job_id"] == job and line["attempt_id"] == 1 and line["kind"] == "test.log"
    assert line["trace_id"] == "trace-abc"


class BreaksBefore(Middleware):
    def around(self, ctx, kind, call):
        raise RuntimeError("tracer misconfigured")


class BreaksAfter(Middleware):
    def around(self, ctx, kind, call):
        call()
        raise RuntimeError("exporter down")


def test_a_middleware_that_fails_before_the_handler_fails_the_attempt_naming_it(app, pipeline):
    job = app.submit("conveyor.echo", {"x": 1}, max_attempts=1)
    with pipeline(middleware=[BreaksBefore()]) as p:
        (done,) = p.wait([job])
    assert done.status.value == "failed" and done.error_code == "internal_error"
    assert "middleware BreaksBefore failed before the handler ran" in done.last_error
    assert "tracer misconfigured" in done.last_error


def test_a_middleware_that_fails_after_the_handler_leaves_its_result(app, pipeline, caplog):
    job = app.submit("conveyor.echo", {"x": 2})
    with caplog.at_level(logging.ERROR, logger="conveyor.worker"), pipeline(middleware=[BreaksAfter()]) as p:
        (done,) = p.wait([job])
    assert done.status.value == "succeeded" and done.result == {"x": 2}
    assert any("middleware BreaksAfter failed after the handler" in r.getMessage() for r in caplog.records)
