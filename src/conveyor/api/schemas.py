"""The request and response bodies, as the OpenAPI document describes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from conveyor.limits import KIND_PATTERN, MAX_ATTEMPTS_MAX, PRIORITY_MAX, PRIORITY_MIN, REASON_MAX, TEXT_LIMITS

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class ErrorInfo(BaseModel):
    """What went wrong."""

    code: str = Field(description="A code of the error catalog (`conveyor errors`).")
    message: str
    detail: Any = None


class ErrorOut(BaseModel):
    """Every answer that is not a success."""

    error: ErrorInfo


class JobIn(BaseModel):
    """A job to submit."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(pattern=f"^{KIND_PATTERN}$", description="A registered job kind, e.g. `conveyor.echo`.")
    payload: Any = Field(None, description="Plain JSON, at most CONVEYOR_MAX_PAYLOAD_BYTES encoded.")
    priority: StrictInt = Field(0, ge=PRIORITY_MIN, le=PRIORITY_MAX, description="Higher runs first.")
    run_at: datetime | None = Field(None, description="Not before this time (ISO 8601; no zone means UTC), "
                                                      "at most 366 days ahead.")
    max_attempts: StrictInt | None = Field(None, ge=1, le=MAX_ATTEMPTS_MAX,
                                           description="Default: the kind's, else CONVEYOR_MAX_ATTEMPTS.")
    file_id: str | None = Field(None, max_length=TEXT_LIMITS["file_id"])
    trace_id: str | None = Field(None, max_length=TEXT_LIMITS["trace_id"])


class CancelIn(BaseModel):
    """Why a job is cancelled."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=REASON_MAX)


class ErrorEntry(BaseModel):
    """One failed attempt."""

    attempt: int | None = None
    code: str | None = None
    message: str | None = None
    at: str | None = None
    details: Any = None


class EventOut(BaseModel):
    """One entry of a job's change log (a row of `conveyor_job_events`)."""

    id: int
    job_id: str | None = None
    attempt_id: int
    action: str
    payload: dict[str, Any]
    created_at: str


class JobOut(BaseModel):
    """A job. `lease_owner` and `lease_expires_at` are shown to admins only."""

    id: str
    kind: str
    status: Status
    tenant_id: str
    org_id: str | None
    priority: int
    payload: Any
    result: Any
    error_code: str | None
    last_error: str | None
    error_history: list[ErrorEntry]
    attempt_id: int
    attempts: int
    max_attempts: int
    lease_owner: str | None = None
    lease_expires_at: str | None = None
    next_attempt_at: str | None
    idempotency_key: str | None
    file_id: str | None
    trace_id: str | None
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None


class Diagnostics(BaseModel):
    """Why a failed or stuck job is where it is (`conveyor diagnose`)."""

    cause_code: str | None = Field(None, description="One of `conveyor diagnose`'s cause codes "
                                                      "(docs/operations.md), or a plugin's catalog code.")
    cause: str
    next_step: str | None
    evidence: list[str] | None = Field(None, description="What the cause rests on (admins).")
    findings: list[dict[str, Any]] | None = None


class JobDetailOut(JobOut):
    """A job with its change log, and a diagnosis when it failed or is stuck."""

    events: list[EventOut]
    diagnostics: Diagnostics | None


class JobPage(BaseModel):
    """One page of jobs, newest first."""

    items: list[JobOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one.")


class EventList(BaseModel):
    """A job's change log, oldest first."""

    items: list[EventOut]


class Check(BaseModel):
    """One component of the deployment."""

    ok: bool
    detail: str
    ms: float | None = None


class HealthOut(BaseModel):
    """The deployment's backends and plugins; 503 when a backend is down."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, Check]
    plugins_failed: list[str]


class PluginOut(BaseModel):
    """A plugin as `conveyor plugins --json` shows it."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    hooks: list[str]
    error: str | None
