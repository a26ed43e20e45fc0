"""``GET /api/v1/overview``: what the dashboard's first page shows, in one answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from conveyor.api.deps import Caller, current_caller
from conveyor.api.errors import ApiError, retry_after
from conveyor.api.schemas import ErrorOut
from conveyor.db import utcnow
from conveyor.models import iso

router = APIRouter(tags=["operations"])
CallerDep = Annotated[Caller, Depends(current_caller)]


def _fleet(caller: Caller) -> dict[str, Any]:
    """Workers, the scheduler's leader and the queue: the deployment's, so for admins only."""
    from conveyor import lease, presence
    from conveyor.scheduler import LEADER_LEASE
    app = caller.app.control
    out: dict[str, Any] = {}
    try:
        alive = [w for w in presence.list_workers(app.engine) if w["alive"]]
        out["workers"] = [{"name": w["name"], "role": w["role"], "slots": w.get("slots"),
                           "in_use": w.get("in_flight"), "last_seen_at": iso(w["last_seen_at"])} for w in alive]
        holder = lease.current(app.engine, LEADER_LEASE)
        live = holder is not None and holder["expires_at"] is not None and holder["expires_at"] > utcnow()
        out["scheduler_leader"] = holder["holder"] if holder is not None and live else None
    except Exception as exc:  # the page still shows the jobs
        out["fleet_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    try:
        out["queue"] = app.queue.pressure().as_dict()
    except Exception as exc:
        out["queue_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    return out


_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorOut} for s in (401, 403, 422, 503)}


@router.get("/overview", response_model=None, summary="Counts by status; workers and queue for admins",
            responses=_ERRORS)
def overview(caller: CallerDep) -> dict[str, Any]:
    """The caller's jobs by status; for admins also the alive workers, the scheduler's leader and the queue."""
    body: dict[str, Any] = {"counts": caller.app.store.count_by_status(caller.scope),
                            "tenant": caller.scope.tenant, "admin": caller.identity.admin,
                            "subject": caller.identity.subject}
    if caller.identity.admin:
        body.update(_fleet(caller))
    return body


@router.get("/overview/history", response_model=None, summary="The last hour, minute by minute",
            responses=_ERRORS)
def overview_history(caller: CallerDep, minutes: Annotated[int, Query(ge=1, le=24 * 60)] = 60) -> dict[str, Any]:
    """Per minute: jobs submitted, succeeded and failed, submit-to-finish p50/p99 (of the caller's tenant, or of
    the deployment for an all-tenant caller); for admins also the queue length, delivered-but-unacked entries,
    the oldest entry's age and the outbox backlog. The scheduler's leader records a minute after it ends."""
    from sqlalchemy.exc import SQLAlchemyError

    from conveyor.history import recent
    try:
        return {"minutes": recent(caller.app, caller.scope, minutes, gauges=caller.identity.admin)}
    except SQLAlchemyError as exc:
        raise ApiError(503, "unavailable", "the history cannot be read (is the schema behind this release? "
                                           "`conveyor db upgrade` brings it up to date)",
                       {"reason": type(exc).__name__}, headers=retry_after(30)) from None
