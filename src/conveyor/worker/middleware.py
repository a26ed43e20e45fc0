"""Code around every handler call: timing, metrics, logging and tracing, each a ``Middleware``.

A worker calls a job's handler through its middleware chain: the first middleware's
``around`` gets a ``call`` that runs the next one, and the last one's runs the handler.
``Worker(app, middleware=[...])`` replaces the chain; ``DEFAULT_MIDDLEWARE`` is what the
``conveyor worker`` command runs.

Error policy: a middleware that raises after the handler ran is logged under its class
name, and the handler's result (or exception) stands; one that raises before the handler
ran ends the attempt as ``internal_error``, naming the middleware.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from conveyor.kinds import JobContext, JobKind
from conveyor.logs import job_fields
from conveyor.metrics import get_metrics

log = logging.getLogger("conveyor.worker")

Call = Callable[[], Any]


class Middleware:
    """Runs around a handler: override ``around`` and return what ``call()`` returns."""

    def around(self, ctx: JobContext, kind: JobKind, call: Call) -> Any:
        """Run ``call()`` (the rest of the chain, then the handler) and return its result."""
        return call()


class Timing(Middleware):
    """Puts the handler's wall time, in seconds, in ``ctx.services["handler_seconds"]`` when it returns or raises."""

    def around(self, ctx: JobContext, kind: JobKind, call: Call) -> Any:
        """Time the rest of the chain."""
        t0 = time.perf_counter()
        try:
            return call()
        finally:
            ctx.services["handler_seconds"] = time.perf_counter() - t0


class Metrics(Middleware):
    """Counts handler run time in ``conveyor_handler_seconds{kind, outcome}`` (outcome ``returned`` or ``raised``)."""

    def around(self, ctx: JobContext, kind: JobKind, call: Call) -> Any:
        """Observe the rest of the chain when metrics are enabled in this process."""
        m = get_metrics()
        if m is None:
            return call()
        t0 = time.perf_counter()
        outcome = "raised"
        try:
            result = call()
            outcome = "returned"
            return result
        finally:
            m.handler.labels(kind.name, outcome).observe(time.perf_counter() - t0)


class Logging(Middleware):
    """Logs each attempt's start and end at DEBUG on ``conveyor.worker``."""

    def around(self, ctx: JobContext, kind: JobKind, call: Call) -> Any:
        """Log around the rest of the chain, only when DEBUG is on."""
        if not log.isEnabledFor(logging.DEBUG):
            return call()
        log.debug("handler start job=%s attempt=%s kind=%s", ctx.job_id, ctx.attempt_id, kind.name)
        t0 = time.perf_counter()
        try:
            result = call()
        except BaseException as exc:
            log.debug("handler raised job=%s attempt=%s %s after %.3fs", ctx.job_id, ctx.attempt_id,
                      type(exc).__name__, time.perf_counter() - t0)
            raise
        log.debug("handler returned job=%s attempt=%s after %.3fs", ctx.job_id, ctx.attempt_id,
                  time.perf_counter() - t0)
        return result


class Tracing(Middleware):
    """Tags every log record the handler writes with its ``job_id``, ``attempt_id``, ``kind`` and ``trace_id``.

    The JSON log format (``CONVEYOR_LOG_FORMAT=json``) adds them as members, so a log
    pipeline can follow one job (or one trace, across jobs) through a handler's own logs.
    """

    def around(self, ctx: JobContext, kind: JobKind, call: Call) -> Any:
        """Set the job's fields for the rest of the chain."""
        fields = {"job_id": ctx.job_id, "attempt_id": ctx.attempt_id, "kind": kind.name}
        if ctx.trace_id:
            fields["trace_id"] = ctx.trace_id
        token = job_fields.set(fields)
        try:
            return call()
        finally:
            job_fields.reset(token)


#: the chain ``conveyor worker`` runs, outermost first
DEFAULT_MIDDLEWARE: tuple[Middleware, ...] = (Tracing(), Logging(), Metrics(), Timing())


def chain(middleware: Sequence[Middleware], ctx: JobContext, kind: JobKind) -> Call:
    """The handler call wrapped in ``middleware`` (outermost first)."""
    def call() -> Any:
        return kind.handler(ctx)
    for m in reversed(middleware):
        call = _wrap(m, ctx, kind, call)
    return call


def _wrap(m: Middleware, ctx: JobContext, kind: JobKind, inner: Call) -> Call:
    def call() -> Any:
        ran: list[tuple[bool, Any]] = []  # (raised, result or exception) of the inner call

        def marked() -> Any:
            try:
                result = inner()
            except BaseException as exc:
                ran.append((True, exc))
                raise
            ran.append((False, result))
            return result

        try:
            return m.around(ctx, kind, marked)
        except BaseException as exc:
            if not ran:
                raise MiddlewareError(f"middleware {type(m).__name__} failed before the handler ran: "
                                      f"{type(exc).__name__}: {exc}") from exc
            raised, value = ran[0]
            if raised and exc is value:
                raise  # the handler's own exception, passing through
            log.error("middleware %s failed after the handler of job %s ran: %s: %s", type(m).__name__,
                      ctx.job_id, type(exc).__name__, exc)
            if raised:
                raise value from None
            return value
    return call


class MiddlewareError(RuntimeError):
    """A middleware failed before the handler ran (the attempt ends ``internal_error``)."""
