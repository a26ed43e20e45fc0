"""What a caller sees of a job and its events: everything for admins, less for the others.

Left out for callers without the admin role (never an error): ``lease_owner`` and
``lease_expires_at``; the worker names in event payloads (``consumer``, ``previous_owner``,
``by``, ``entry_id``); the ``details`` of ``error_history`` entries; and the text of
``internal_error`` and ``lease_lost`` failures (a traceback, a worker's name), replaced by
the catalog's meaning. Payload and result are the tenant's own data and shown, less what the
job's kind leaves out through ``JobKind.public_view`` (the CAD kind: its artifacts' storage keys).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse

from conveyor.db import utcnow
from conveyor.errors import CATALOG
from conveyor.models import Job, JobStatus

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.kinds import JobKind
    from conveyor.registry import Registry

log = logging.getLogger("conveyor.api")

ADMIN_JOB_FIELDS = ("lease_owner", "lease_expires_at")
WORKER_EVENT_KEYS = frozenset({"consumer", "previous_owner", "by", "entry_id"})
#: codes whose message is the system's business (a traceback, a worker's name)
SYSTEM_CODES = frozenset({"internal_error", "lease_lost"})


def _public_message(code: str | None, message: Any) -> Any:
    if code in SYSTEM_CODES:
        entry = CATALOG.get(code or "")
        return entry.meaning if entry else code
    return message


def json_answer(data: dict[str, Any], status_code: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON response of views that are JSON already (``job_view``, ``event_view``): FastAPI's
    ``jsonable_encoder`` walk of every value is left out."""
    return JSONResponse(data, status_code, headers)


def job_view(job: Job, admin: bool, kinds: Registry[JobKind] | None = None) -> dict[str, Any]:
    """The job as JSON for this caller (``kinds``: where a kind's ``public_view`` is found)."""
    data = job.as_dict()
    if admin:
        return data
    for k in ADMIN_JOB_FIELDS:
        data.pop(k, None)
    data["last_error"] = _public_message(job.error_code, job.last_error)
    data["error_history"] = [{"attempt": e.get("attempt"), "code": e.get("code"), "at": e.get("at"),
                              "message": _public_message(e.get("code"), e.get("message"))}
                             for e in job.error_history]
    kind = kinds.get(job.kind) if kinds is not None else None
    if kind is not None and kind.public_view is not None:
        try:
            data = kind.public_view(data)
        except Exception:  # a broken view fails closed: the result is left out, the plugin named
            log.exception("job kind %s (plugin %s): public_view failed; result left out",
                          job.kind, kinds.owner(job.kind) if kinds is not None else "?")
            data["result"] = None
    return data


def event_view(event: dict[str, Any], admin: bool) -> dict[str, Any]:
    """One change-log entry as JSON for this caller."""
    keys = ("id", "job_id", "attempt_id", "action", "payload", "created_at")
    out: dict[str, Any] = {k: event[k] for k in keys if k in event}
    if admin:
        return out
    payload = {k: v for k, v in (event.get("payload") or {}).items() if k not in WORKER_EVENT_KEYS}
    if "error_message" in payload:
        payload["error_message"] = _public_message(payload.get("error_code"), payload["error_message"])
    out["payload"] = payload
    return out


def is_stuck(job: Job, lease_s: float, grace_s: float) -> bool:
    """A job that should be moving and is not: queued and due for longer than a lease, or running on a dead lease."""
    now = utcnow()
    if job.status == JobStatus.RUNNING:
        return job.lease_expires_at is not None and job.lease_expires_at < now
    if job.status == JobStatus.QUEUED:
        due = job.next_attempt_at or job.updated_at
        return due < now - timedelta(seconds=lease_s + grace_s)
    return False


def diagnostics(app: Conveyor, job: Job, admin: bool) -> dict[str, Any] | None:
    """``conveyor diagnose``'s cause and next step for a failed or stuck job (with its findings for admins)."""
    s = app.settings
    if job.status != JobStatus.FAILED and not is_stuck(job, s.lease_seconds, s.reclaim_grace_seconds):
        return None
    from conveyor.diagnostics import diagnose
    try:
        report = diagnose(app, job.id)
    except Exception as exc:  # diagnosis is a courtesy: the job itself is still shown
        log.warning("diagnose %s failed: %s", job.id, exc)
        return {"cause_code": None, "cause": "diagnosis failed; an operator can run `conveyor diagnose`",
                "next_step": None}
    if admin:
        return {"cause_code": report["cause_code"], "cause": report["cause"], "next_step": report["next_step"],
                "evidence": report["evidence"], "findings": report["findings"]}
    cause, step = str(report["cause"]), str(report["next_step"])
    if job.error_code in SYSTEM_CODES and job.last_error:
        cause = cause.replace(job.last_error, "details for administrators")
    if job.lease_owner:
        cause = cause.replace(job.lease_owner, "a worker")
    for row in report.get("outbox") or ():  # queue errors name hosts and ports
        if row.get("last_error"):
            cause = cause.replace(str(row["last_error"]), "details for administrators")
    return {"cause_code": report["cause_code"], "cause": cause, "next_step": step}
