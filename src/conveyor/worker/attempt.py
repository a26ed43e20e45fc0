"""One attempt: run a claimed job's handler (through the middleware) and turn what happened into an ``Outcome``."""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conveyor import store
from conveyor.errors import Cancelled, JobError
from conveyor.kinds import JobContext, JobKind
from conveyor.worker.held import Held
from conveyor.worker.middleware import Middleware, chain

if TYPE_CHECKING:
    from conveyor.app import Conveyor


def run_attempt(app: Conveyor, held: Held, kind: JobKind | None, middleware: Sequence[Middleware]) -> store.Outcome:
    """Call the handler and classify its end: a result, a ``JobError`` code, a cancellation, or a crash."""
    job = held.claimed.job
    settings = app.settings
    ctx = JobContext(job.id, job.attempt_id, job.kind, job.payload, job.tenant_id, job.org_id, job.file_id,
                     job.trace_id, held.token, app.storage, {"app": held.app})
    base: dict[str, Any] = dict(job_id=job.id, attempt_id=job.attempt_id, entry_id=held.claimed.entry_id)
    if kind is None:
        return store.Outcome(**base, ok=False, error_code="handler_not_found",
                             error_message=f"no loaded plugin registers job kind {job.kind!r}; "
                                           f"`conveyor plugins` lists what this worker loaded")
    catalog = app.plugins.catalog
    try:
        result = chain(middleware, ctx, kind)()
        if held.token.cancelled:
            raise Cancelled(held.token.reason or "cancelled")
        try:
            result = store.check_json(result)
        except store.InvalidPayload as exc:
            raise JobError("internal_error", f"handler of {job.kind} returned a result that cannot be "
                                             f"stored: {exc}", retryable=False) from None
        outcome = store.Outcome(**base, ok=True, result=result)
    except JobError as exc:
        code = exc.code
        if held.token.cancelled and held.token.reason in ("timeout", "lease_lost", "cancelled"):
            code = held.token.reason or code
        retryable = catalog.is_retryable(code) if code != exc.code else exc.retryable(catalog)
        outcome = store.Outcome(**base, ok=False, error_code=code, error_message=exc.message,
                                retryable=retryable, details=exc.details)
    except Exception as exc:
        tb = traceback.format_exc(limit=8)
        outcome = store.Outcome(**base, ok=False, error_code="internal_error",
                                error_message=f"{type(exc).__name__}: {exc}\n{tb}", retryable=True)
    if not outcome.ok and outcome.retryable:
        delay = kind.retry.delay(job.attempts, settings.retry_base_seconds, settings.retry_max_seconds)
        outcome = store.Outcome(**{**outcome.__dict__, "retry_delay_s": delay})
    return outcome


def abandoned_outcome(app: Conveyor, held: Held, grace_s: float) -> store.Outcome:
    """The outcome of an attempt whose handler ignored its token for ``grace_s``: ended without it."""
    reason = held.token.reason or "cancelled"
    job = held.claimed.job
    if reason != "timeout":
        # cancelled, lease lost or released: the job is no longer this attempt's, finalize records it stale
        return store.Outcome(job.id, job.attempt_id, held.claimed.entry_id, ok=False,
                             error_code=reason if reason in ("cancelled", "lease_lost") else "lease_lost",
                             error_message=f"handler ignored {reason}")
    kind = app.kinds.get(job.kind)
    s = app.settings
    delay = kind.retry.delay(job.attempts, s.retry_base_seconds, s.retry_max_seconds) if kind else 1.0
    limit = kind.timeout_s if kind else "?"
    return store.Outcome(job.id, job.attempt_id, held.claimed.entry_id, ok=False, error_code="timeout",
                         error_message=f"handler exceeded its timeout of {limit}s",
                         retryable=app.plugins.catalog.is_retryable("timeout"), retry_delay_s=delay)
