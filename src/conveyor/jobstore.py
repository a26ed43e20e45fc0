"""`JobStore`: one deployment's jobs, the one interface through which the core reads and writes them.

``Conveyor.store`` builds it. It binds the steps of ``conveyor.store`` to the deployment's
engine, stream and limits, picks once (from the engine's dialect) which of them run as
PostgreSQL's one-statement forms, and owns what a write sets off after its commit: the
events go to the deployment's observers, and a write that puts a job back in the outbox
wakes the deployment's idle dispatchers (``pending``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from conveyor import store
from conveyor.fencing import LIVE
from conveyor.limits import DEFAULT_MAX_PAYLOAD_BYTES
from conveyor.models import EventAction, Job, JobStatus
from conveyor.notify import Wakeup
from conveyor.observers import Observers
from conveyor.store import Claimed, Finalized, JobSpec, LiveAttempt, Outcome, Scope, Submitted

Events = list[dict[str, Any]]


class JobStore:
    """Every read and write of one deployment's jobs, on one database, each write fenced or CAS-guarded."""

    def __init__(self, engine: Engine, *, stream: str = "conveyor:jobs", pending: Wakeup | None = None,
                 observers: Observers | None = None, default_max_attempts: int = 3, idempotency_ttl_s: float = 86400.0,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self.engine = engine
        self.stream = stream
        #: set off by every write that leaves outbox rows pending; idle dispatchers wait on it
        self.pending = pending if pending is not None else Wakeup()
        #: this deployment's observers: every write here reports the events it committed to them
        self.observers = observers if observers is not None else Observers()
        self._report = self.observers.publish
        self.default_max_attempts = default_max_attempts
        self.idempotency_ttl_s = idempotency_ttl_s
        self.max_payload_bytes = max_payload_bytes
        steps = store.steps_for(engine)
        #: whether a claim's statement also commits finished outcomes here (PostgreSQL), chosen once
        self.claim_commits_outcomes: bool = steps.claim_commits_outcomes

    def _bind(self, conn: Connection | None) -> Engine | Connection:
        return conn if conn is not None else self.engine

    # ------------------------------------------------------------ submit

    def submit(self, specs: Sequence[JobSpec], *, conn: Connection | None = None,
               checked: bool = False) -> list[Submitted]:
        """Insert jobs, their outbox rows and events in one transaction (the caller's, with ``conn``)."""
        done = store.submit_jobs(self._bind(conn), specs, default_max_attempts=self.default_max_attempts,
                                 idempotency_ttl_s=self.idempotency_ttl_s, stream=self.stream,
                                 max_payload_bytes=self.max_payload_bytes, checked=checked,
                                 report=self._report)
        self.pending.notify()
        return done

    # ------------------------------------------------------------ reads

    def get_job(self, job_id: str, tenant: str | None = None, *, conn: Connection | None = None) -> Job:
        """One job (JobNotFound if there is none, in ``tenant``)."""
        return store.get_job(self._bind(conn), job_id, tenant)

    def get_job_with_events(self, job_id: str, tenant: str | None = None) -> tuple[Job, Events]:
        """A job and its change log, read together."""
        return store.get_job_with_events(self.engine, job_id, tenant)

    def list_jobs(self, **filters: Any) -> list[Job]:
        """Jobs, newest first (``store.list_jobs``'s filters)."""
        return store.list_jobs(self.engine, **filters)

    def job_events(self, job_id: str) -> Events:
        """A job's change log, oldest first."""
        return store.job_events(self.engine, job_id)

    def page_jobs(self, scope: Scope, **filters: Any) -> list[Job]:
        """One page of the jobs in ``scope``, newest first (``store.page_jobs``)."""
        return store.page_jobs(self.engine, scope, **filters)

    def count_by_status(self, scope: Scope) -> dict[str, int]:
        """Jobs in ``scope`` by status."""
        return store.count_by_status(self.engine, scope)

    def count_active(self, tenant: str, *, conn: Connection | None = None) -> int:
        """A tenant's queued and running jobs."""
        return store.count_active(self._bind(conn), tenant)

    def events_after(self, after: int, upto: int, scope: Scope, job_id: str | None = None,
                     limit: int = 500) -> Events:
        """Events with ``after < id <= upto`` in ``scope``, oldest first."""
        return store.events_after(self.engine, after, upto, scope, job_id, limit)

    def event_ids_after(self, after: int, limit: int = 1000) -> list[tuple[int, datetime]]:
        """Ids and times of every event after ``after``, for gap detection."""
        return store.event_ids_after(self.engine, after, limit)

    def last_event_id(self) -> int:
        """The highest event id committed so far."""
        return store.last_event_id(self.engine)

    # ------------------------------------------------------------ the worker's writes

    def claim(self, entries: Sequence[tuple[str, str]], owner: str, lease_s: float, *,
              conn: Connection | None = None) -> tuple[list[Claimed], list[str], Events]:
        """Claim jobs for queue entries ``(entry_id, job_id)`` (``store.claim``; with ``conn``, report its events
        to ``observers`` after committing)."""
        return store.claim(self._bind(conn), entries, owner, lease_s, report=self._report)

    def claim_and_finalize(self, entries: Sequence[tuple[str, str]], owner: str, lease_s: float,
                           outcomes: Sequence[Outcome]
                           ) -> tuple[list[Claimed], list[str], list[Finalized], list[Outcome]]:
        """Commit the fenced successes among ``outcomes`` and claim ``entries`` in one statement."""
        return store.claim_and_finalize(self.engine, entries, owner, lease_s, outcomes, report=self._report)

    def renew(self, owner: str, held: dict[str, int], lease_s: float) -> dict[str, str]:
        """Extend held leases ``{job_id: attempt_id}``; the lost ones with why."""
        return store.renew(self.engine, owner, held, lease_s, report=self._report)

    def cancelled_among(self, job_ids: Sequence[str]) -> list[str]:
        """Which of these jobs have been cancelled."""
        return store.cancelled_among(self.engine, job_ids)

    def finalize(self, outcomes: Sequence[Outcome], *,
                 ack: Callable[[Connection, list[str]], object] | None = None) -> tuple[list[Finalized], Events]:
        """Record attempt outcomes, each fenced by its attempt (``store.finalize``)."""
        done, ev = store.finalize(self.engine, outcomes, stream=self.stream, ack=ack, report=self._report)
        if any(d.action == "retry_scheduled" for d in done):
            self.pending.notify()
        return done, ev

    def release(self, owner: str, held: dict[str, int]) -> list[str]:
        """Hand held jobs back at shutdown: queued again, their attempts fenced out."""
        released = store.release(self.engine, owner, held, stream=self.stream, report=self._report)
        if released:
            self.pending.notify()
        return released

    def live_attempt(self, job_id: str, attempt_id: int, statuses: tuple[str, ...] = LIVE
                     ) -> AbstractContextManager[LiveAttempt | None]:
        """A transaction in which ``attempt_id`` is the job's live attempt; None when it is not."""
        return store.live_attempt(self.engine, job_id, attempt_id, statuses)

    # ------------------------------------------------------------ a person's writes

    def cancel(self, job_id: str, tenant: str | None = None, reason: str = "") -> Job:
        """Cancel a queued or running job."""
        return store.cancel(self.engine, job_id, tenant=tenant, reason=reason, report=self._report)

    def retry(self, job_id: str, tenant: str | None = None) -> Job:
        """Run a failed or cancelled job again with a fresh attempt budget."""
        job = store.retry(self.engine, job_id, tenant=tenant, stream=self.stream, report=self._report)
        self.pending.notify()
        return job

    def transition(self, job_id: str, target: JobStatus, *, tenant: str | None = None, **values: Any) -> Job:
        """Move a job to ``target`` if the state machine allows it."""
        return store.transition(self.engine, job_id, target, tenant=tenant, **values)

    # ------------------------------------------------------------ the outbox, inside a caller's transaction

    def pending_outbox(self, conn: Connection, now: datetime, limit: int) -> list[Any]:
        """Due pending outbox rows, oldest first (locked against other dispatchers where possible)."""
        return store.pending_outbox(conn, now, limit)

    def count_pending_outbox(self) -> int:
        """Outbox rows not yet published."""
        return store.count_pending_outbox(self.engine)

    def mark_dispatched(self, conn: Connection, rows: Sequence[Any], entry_ids: Sequence[str],
                        now: datetime) -> Events:
        """Stamp published outbox rows with their entry ids; the ``dispatched`` events."""
        return store.mark_dispatched(conn, rows, entry_ids, now)

    def republish(self, conn: Connection, job: Job, now: datetime, action: EventAction, *, attempt_id: int,
                  attempt_hint: int, **payload: Any) -> Events:
        """Queue ``job`` again through the outbox and record why (notify ``pending`` after the commit)."""
        return store.republish(conn, job, now, self.stream, action, attempt_id=attempt_id,
                               attempt_hint=attempt_hint, **payload)

    def fail_exhausted(self, conn: Connection, job: Job, now: datetime, by: str) -> Events:
        """Fail a running job whose lease expired on its last attempt; its event."""
        return store.fail_exhausted(conn, job, now, by)

