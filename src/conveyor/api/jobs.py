"""``/api/v1/jobs``: submit, read, list, cancel, retry, and a job's change log."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.encoders import jsonable_encoder

from conveyor.api.deps import CallerDep
from conveyor.api.errors import ApiError, not_found
from conveyor.api.schemas import CancelIn, ErrorOut, EventList, JobDetailOut, JobIn, JobOut, JobPage, Status
from conveyor.api.tenancy import write_tenant
from conveyor.api.views import diagnostics, event_view, job_view, json_answer
from conveyor.app import Conveyor
from conveyor.errors import JobNotFound
from conveyor.limits import TEXT_LIMITS
from conveyor.models import Job
from conveyor.store import Scope

MAX_PAGE = 500

router = APIRouter(tags=["jobs"])


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorOut} for s in (401, 403, 422, 503, *statuses)}


def _plausible_id(job_id: str) -> bool:
    return 0 < len(job_id) <= 36 and job_id.isascii() and job_id.isprintable()


def visible_job(app: Conveyor, scope: Scope, job_id: str) -> Job:
    """The job if this scope may see it; 404 ``not_found`` otherwise (also for another tenant's job)."""
    if not _plausible_id(job_id):
        raise not_found()
    try:
        job = app.get(job_id, scope.tenant)
    except JobNotFound:
        raise not_found() from None
    if not scope.allows(job):
        raise not_found()
    return job


def _filter(name: str, value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    if len(value) > limit or not value.isprintable():
        raise ApiError(422, "invalid_request", f"{name} must be printable text of at most {limit} characters",
                       {"query": name})
    return value


def encode_cursor(job: Job) -> str:
    """An opaque cursor after ``job`` in newest-first order."""
    raw = json.dumps([job.created_at.isoformat(), job.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """``(created_at, id)`` from a cursor this API issued; 422 otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, job_id = json.loads(raw)
        if not isinstance(job_id, str) or not isinstance(at, str):
            raise ValueError
        return datetime.fromisoformat(at).replace(tzinfo=None), job_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ApiError(422, "invalid_request", "cursor is not one this API issued; pass next_cursor from the "
                                               "previous page", {"query": "cursor"}) from None


@router.post("/jobs", status_code=201, response_model=None, summary="Submit a job",
             responses={201: {"model": JobOut, "description": "Created"},
                        200: {"model": JobOut, "description": "An idempotent replay: the job the key names"},
                        **_errors(413, 429)})
def submit_job(request: Request, body: Annotated[JobIn, Body()], caller: CallerDep,
               idempotency_key: Annotated[str | None, Header(
                   max_length=TEXT_LIMITS["idempotency_key"],
                   description="The same key in the same tenant returns the existing job (200) instead of "
                               "creating another; reusable once that job has been final for "
                               "CONVEYOR_IDEMPOTENCY_TTL_SECONDS.")] = None) -> Response:
    """Submit one job in the caller's tenant and org; 201 with the job.

    Refused with 422 (`invalid_job`, `invalid_payload`), 413 (`payload_too_large`)
    or 429 (`quota_exceeded`, `queue_pressure`, with `Retry-After`), writing nothing.
    """
    tenant = write_tenant(caller.scope)
    done = caller.app.submit_job(body.kind, body.payload, tenant=tenant, org=caller.scope.org, priority=body.priority,
                                 idempotency_key=idempotency_key or None, max_attempts=body.max_attempts,
                                 file_id=body.file_id, run_at=body.run_at, trace_id=body.trace_id)
    job = done.job or caller.app.get(done.job_id)
    headers = {"Location": f"{request.scope['path'].rstrip('/')}/{job.id}"}  # wherever the router is mounted
    if done.replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_answer(job_view(job, caller.identity.admin, caller.app.kinds), 200 if done.replayed else 201, headers)


@router.get("/jobs/{job_id}", name="get_job", response_model=None, summary="Read a job",
            responses={200: {"model": JobDetailOut}, **_errors(404)})
def get_job(job_id: str, caller: CallerDep) -> Response:
    """The job, its change log (`events`) and, when it failed or is stuck, `diagnostics`."""
    if not _plausible_id(job_id):
        raise not_found()
    try:
        job, log = caller.app.store.get_job_with_events(job_id, caller.scope.tenant)
    except JobNotFound:
        raise not_found() from None
    if not caller.scope.allows(job):
        raise not_found()
    data = job_view(job, caller.identity.admin, caller.app.kinds)
    data["events"] = [event_view({**e, "job_id": job.id}, caller.identity.admin) for e in log]
    data["diagnostics"] = jsonable_encoder(diagnostics(caller.app, job, caller.identity.admin))
    return json_answer(data)


@router.get("/jobs", response_model=None, summary="List jobs",
            responses={200: {"model": JobPage}, **_errors()})
def list_jobs(caller: CallerDep,
              status: Annotated[Status | None, Query()] = None,
              kind: Annotated[str | None, Query(max_length=100)] = None,
              file_id: Annotated[str | None, Query(max_length=TEXT_LIMITS["file_id"])] = None,
              limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
              cursor: Annotated[str | None, Query(max_length=400)] = None) -> dict[str, Any]:
    """The caller's jobs, newest first, one page at a time (`next_cursor` until the last page)."""
    before = decode_cursor(cursor) if cursor else None
    found = caller.app.store.page_jobs(caller.scope, status=status, kind=_filter("kind", kind, 100),
                                       file_id=_filter("file_id", file_id, TEXT_LIMITS["file_id"]),
                                       limit=limit + 1, before=before)
    page, more = found[:limit], len(found) > limit
    return {"items": [job_view(j, caller.identity.admin, caller.app.kinds) for j in page],
            "next_cursor": encode_cursor(page[-1]) if more and page else None}


@router.post("/jobs/{job_id}/cancel", response_model=None, summary="Cancel a job",
             responses={200: {"model": JobOut}, **_errors(404, 409)})
def cancel_job(job_id: str, caller: CallerDep,
               body: Annotated[CancelIn | None, Body()] = None) -> dict[str, Any]:
    """Cancel a queued or running job (a running handler stops at its next heartbeat); 409 when it is final."""
    job = visible_job(caller.app, caller.scope, job_id)
    done = caller.app.cancel(job.id, tenant=job.tenant_id, reason=body.reason if body else "")
    return job_view(done, caller.identity.admin, caller.app.kinds)


@router.post("/jobs/{job_id}/retry", response_model=None, summary="Run a failed or cancelled job again",
             responses={200: {"model": JobOut}, **_errors(404, 409)})
def retry_job(job_id: str, caller: CallerDep) -> dict[str, Any]:
    """Queue a failed or cancelled job again with a fresh attempt budget; its next attempt has a bigger
    `attempt_id`. 409 for a job in any other status."""
    job = visible_job(caller.app, caller.scope, job_id)
    return job_view(caller.app.retry(job.id, tenant=job.tenant_id), caller.identity.admin,
                    caller.app.kinds)


@router.get("/jobs/{job_id}/events", response_model=None, summary="A job's change log",
            responses={200: {"model": EventList}, **_errors(404)})
def job_events(job_id: str, caller: CallerDep) -> dict[str, Any]:
    """Every recorded state change of the job, oldest first."""
    job = visible_job(caller.app, caller.scope, job_id)
    admin = caller.identity.admin
    return {"items": [event_view({**e, "job_id": job.id}, admin) for e in caller.app.events(job.id)]}
