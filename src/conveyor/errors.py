"""The error catalog: every failure a job can end with, as a code with a policy."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorCode:
    """One catalog entry: what a code means, whether it retries, what to do next."""

    code: str
    retryable: bool
    meaning: str
    next_step: str
    source: str = "conveyor"

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form for `conveyor errors --json` and the API."""
        return {
            "code": self.code,
            "retryable": self.retryable,
            "meaning": self.meaning,
            "next_step": self.next_step,
            "source": self.source,
        }


CORE_CODES: tuple[ErrorCode, ...] = (
    ErrorCode("source_missing", False, "The job's input object is absent from storage.",
              "Check the storage URL and whether a retention or GC run deleted it; re-upload the file."),
    ErrorCode("invalid_payload", False, "The job's payload does not match what its kind expects.",
              "Fix the payload; `conveyor jobs show JOB` shows what was sent."),
    ErrorCode("handler_not_found", False, "No loaded plugin registers the job's kind.",
              "Run `conveyor plugins` on the worker host and install or fix the plugin that provides the kind."),
    ErrorCode("timeout", True, "The handler ran longer than its kind's timeout.",
              "Raise the kind's timeout or make the work smaller; retried with backoff until max_attempts."),
    ErrorCode("lease_lost", True, "The attempt lost its lease (worker killed, stalled or partitioned from the DB).",
              "If it repeats for one job, the job probably kills its worker: check worker logs and memory."),
    ErrorCode("cancelled", False, "The job was cancelled by a user or operator.",
              "Submit it again if it is still wanted."),
    ErrorCode("internal_error", True, "An unexpected exception escaped the handler.",
              "Read the traceback in the job's error_history or the worker log and report it to the plugin's author."),
    ErrorCode("queue_pressure", True, "The queue is past its configured pressure thresholds; the submit was refused.",
              "Retry after the advertised delay, or add workers."),
    ErrorCode("payload_too_large", False, "The payload's JSON is larger than CONVEYOR_MAX_PAYLOAD_BYTES; "
              "the submit was refused and nothing was written.",
              "Store large inputs in storage and pass their key or file_id; raise the limit only if every "
              "worker has the memory for it."),
    ErrorCode("invalid_job", False, "A field of the submitted job is out of bounds (kind, priority, max_attempts, "
              "run_at or delay, idempotency key, tenant, org, file_id, trace_id); the submit was refused.",
              "Fix the field the message names; the message gives its bounds."),
    # ---- answers of the HTTP API (never a job's code)
    ErrorCode("unauthorized", False, "The HTTP API could not identify the caller: no bearer token, or one that is "
              "expired, forged, for another audience or issuer, or signed with an algorithm the deployment does "
              "not accept.",
              "Send `Authorization: Bearer <JWT>` signed with the deployment's key; `conveyor token` mints one "
              "for development."),
    ErrorCode("forbidden", False, "The caller is known but may not do this: a tenant or org outside the token's "
              "claims, or an admin-only route.",
              "Use a token whose `tenant`, `org` (or `tenants`, `orgs`) or `roles` claims allow it."),
    ErrorCode("not_found", False, "No such object for this caller: it does not exist, or it belongs to another "
              "tenant (the API never says which).",
              "Check the id and the tenant the token (or `x-tenant-id`) selects."),
    ErrorCode("invalid_request", False, "The HTTP request is malformed: a body that is not JSON, a missing or "
              "mistyped field, a bad query parameter or cursor.",
              "Fix the request; the error's `detail` lists every field that is wrong and why."),
    ErrorCode("request_too_large", False, "The HTTP request body is larger than the API accepts "
              "(CONVEYOR_MAX_UPLOAD_BYTES for uploads, twice CONVEYOR_MAX_PAYLOAD_BYTES for JSON).",
              "Send a smaller body; put large inputs in storage and send their key."),
    ErrorCode("quota_exceeded", True, "The tenant already has CONVEYOR_TENANT_MAX_ACTIVE_JOBS jobs queued or "
              "running; the submit was refused and nothing was written.",
              "Retry after the advertised delay (`Retry-After`), when some of the tenant's jobs have finished."),
    ErrorCode("illegal_transition", False, "The job's status does not allow the request (cancel a finished job, "
              "retry one that has not failed or been cancelled).",
              "Read the job's status first; only queued or running jobs cancel, only failed or cancelled ones "
              "retry."),
    ErrorCode("unavailable", True, "A backend the request needs (database, queue or storage) is unreachable.",
              "Retry after the advertised delay; an operator checks `GET /api/v1/health` or `conveyor doctor`."),
)


class Catalog:
    """Registry of error codes: the core's plus those plugins contribute."""

    def __init__(self, codes: Iterable[ErrorCode] = CORE_CODES) -> None:
        self._codes: dict[str, ErrorCode] = {}
        for c in codes:
            self.add(c)

    def add(self, code: ErrorCode) -> None:
        """Add one code; a different definition under an existing name is an error."""
        existing = self._codes.get(code.code)
        if existing is not None and existing != code:
            raise ValueError(
                f"error code {code.code!r} from {code.source!r} is already defined by {existing.source!r}; "
                "pick a prefixed name such as 'myplugin_" + code.code + "'"
            )
        self._codes[code.code] = code

    def get(self, code: str) -> ErrorCode | None:
        """The entry for a code, or None."""
        return self._codes.get(code)

    def __contains__(self, code: object) -> bool:
        return code in self._codes

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self._codes.values(), key=lambda c: c.code))

    def is_retryable(self, code: str) -> bool:
        """Whether a job failing with this code should be retried (unknown codes are not)."""
        entry = self._codes.get(code)
        return bool(entry and entry.retryable)


CATALOG = Catalog()


class ConveyorError(Exception):
    """Base of every error the framework raises on purpose."""


class ConfigError(ConveyorError):
    """A configuration value is missing or malformed."""


class SchemaTooNew(ConfigError):
    """The database was upgraded by a newer release than this one."""


class PluginError(ConveyorError):
    """A plugin broke its contract (duplicate id, bad registration)."""


class IllegalTransition(ConveyorError):
    """A job status change that the state machine forbids."""

    def __init__(self, job_id: str, current: str, target: str) -> None:
        super().__init__(f"job {job_id}: cannot go from {current!r} to {target!r}")
        self.job_id, self.current, self.target = job_id, current, target


class JobNotFound(ConveyorError):
    """No job with this id (in this tenant)."""


class QueueUnavailable(ConveyorError):
    """The queue backend cannot be reached; callers back off and retry."""


class Unreachable(ConveyorError):
    """The queue or the database did not answer within the bound of a run a person waits for (``--burst``,
    ``--once``)."""


class RetryLater(ConveyorError):
    """A submit refused for now (backpressure): ``code`` names why, ``retry_after_s`` when to try again."""

    code = "queue_pressure"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueuePressure(RetryLater):
    """Submit refused because the queue is past its pressure thresholds."""

    code = "queue_pressure"


class QuotaExceeded(RetryLater):
    """Submit refused because the tenant has its quota of active jobs (CONVEYOR_TENANT_MAX_ACTIVE_JOBS)."""

    code = "quota_exceeded"

    def __init__(self, message: str, retry_after_s: float, *, tenant: str, limit: int) -> None:
        super().__init__(message, retry_after_s)
        self.tenant, self.limit = tenant, limit


class WaitTimeout(ConveyorError):
    """``wait`` gave up: the job was not final within the timeout (``status`` is what it was last seen as)."""

    def __init__(self, job_id: str, status: str, timeout_s: float) -> None:
        super().__init__(f"job {job_id} is still {status} after {timeout_s:g}s")
        self.job_id, self.status, self.timeout_s = job_id, status, timeout_s


class JobError(ConveyorError):
    """Raised by a handler to end its attempt with a catalog code.

    `retryable` defaults to the catalog's policy for the code.
    """

    def __init__(self, code: str, message: str = "", *, retryable: bool | None = None,
                 details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message or code
        self._retryable = retryable
        self.details = dict(details or {})

    def retryable(self, catalog: Catalog = CATALOG) -> bool:
        """Explicit flag if given, else the catalog's policy."""
        if self._retryable is not None:
            return self._retryable
        return catalog.is_retryable(self.code)


class InvalidJob(JobError):
    """Submit refused a job before writing anything: ``code`` names the check, the message the fix."""

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(code, message, retryable=False, details={"field": field} if field else None)
        self.field = field


class InvalidPayload(InvalidJob):
    """The payload cannot be stored: not plain JSON, nested too deep, or too large."""

    def __init__(self, message: str, code: str = "invalid_payload") -> None:
        super().__init__(code, message, field="payload")


class Cancelled(JobError):
    """Raised inside a handler when its cancellation token fires."""

    def __init__(self, reason: str = "cancelled") -> None:
        super().__init__(reason if reason in ("cancelled", "timeout", "lease_lost") else "cancelled",
                         f"attempt stopped: {reason}")
        self.reason = reason
