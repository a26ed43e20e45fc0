"""Job statuses, their legal transitions, and the records read from the store."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conveyor.errors import IllegalTransition


class JobStatus(str, enum.Enum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """True for succeeded, failed and cancelled."""
        return self in FINAL


FINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

#: every legal status change; anything else raises IllegalTransition
TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    # running → running is a reclaim after the lease expired; → queued is a retry
    JobStatus.RUNNING: frozenset({JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.SUCCEEDED,
                                  JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def check_transition(job_id: str, current: str | JobStatus, target: str | JobStatus) -> None:
    """Raise IllegalTransition unless ``current → target`` is allowed."""
    cur, tgt = JobStatus(current), JobStatus(target)
    if tgt not in TRANSITIONS[cur]:
        raise IllegalTransition(job_id, cur.value, tgt.value)


def sources_of(target: JobStatus) -> list[str]:
    """Statuses from which ``target`` may be reached (for CAS guards in SQL)."""
    return [s.value for s, allowed in TRANSITIONS.items() if target in allowed]


class EventAction(str, enum.Enum):
    """What a job event records."""

    SUBMITTED = "submitted"
    DISPATCHED = "dispatched"
    CLAIMED = "claimed"
    RECLAIMED = "reclaimed"
    LEASE_LOST = "lease_lost"
    STALE_RESULT = "stale_result"
    SUCCEEDED = "succeeded"
    JOB_FAILED = "job_failed"
    RETRY_SCHEDULED = "retry_scheduled"
    CANCELLED = "cancelled"
    REPUBLISHED = "republished"
    RELEASED = "released"
    RETRIED = "retried"


@dataclass(frozen=True)
class Job:
    """One row of ``conveyor_jobs``."""

    id: str
    kind: str
    status: JobStatus
    tenant_id: str
    org_id: str | None
    priority: int
    payload: Any
    result: Any
    error_code: str | None
    last_error: str | None
    error_history: list[dict[str, Any]]
    attempt_id: int
    attempts: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    next_attempt_at: datetime | None
    idempotency_key: str | None
    file_id: str | None
    trace_id: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Job:
        """Build from a SQLAlchemy row mapping."""
        data = {k: row[k] for k in cls.__dataclass_fields__}
        data["status"] = JobStatus(data["status"])
        data["error_history"] = list(data["error_history"] or [])
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON form (timestamps as ISO-8601 UTC)."""
        out = {k: getattr(self, k) for k in _JOB_FIELDS}
        out["status"] = self.status.value
        for k in _JOB_TIMES:
            v = out[k]
            if v is not None:
                out[k] = iso(v)
        return out


_JOB_FIELDS = tuple(Job.__dataclass_fields__)
_JOB_TIMES = ("lease_expires_at", "next_attempt_at", "created_at", "updated_at", "started_at", "finished_at")
assert set(_JOB_TIMES) == {k for k, f in Job.__dataclass_fields__.items() if "datetime" in str(f.type)}


@dataclass(frozen=True)
class Event:
    """One row of ``conveyor_job_events``."""

    id: int
    job_id: str
    attempt_id: int
    action: str
    payload: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {"id": self.id, "job_id": self.job_id, "attempt_id": self.attempt_id, "action": self.action,
                "payload": self.payload, "created_at": iso(self.created_at) if self.created_at else None}


def iso(ts: datetime) -> str:
    """ISO-8601 with a ``Z``; naive datetimes are taken as UTC."""
    return ts.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def event_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A ``conveyor_job_events`` row as observers and event streams receive it (its time as ISO text)."""
    at = row.get("created_at")
    return {"job_id": row["job_id"], "attempt_id": row.get("attempt_id", 0), "action": row["action"],
            "payload": row.get("payload") or {}, "file_id": row.get("file_id"),
            "created_at": iso(at) if isinstance(at, datetime) else at}
