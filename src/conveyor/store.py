"""The steps of every read and write of a job row: submit, claim, renew, finalize, cancel, each CAS-guarded.

Each step takes the engine (or a caller's connection) it runs on; ``conveyor.jobstore.JobStore``
binds them to one deployment, and is what the core calls. Writes by an attempt apply the
fencing rule of ``conveyor.fencing``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Connection, Engine, and_, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from conveyor import store_postgres
from conveyor.db import connection, utcnow
from conveyor.errors import IllegalTransition, InvalidPayload, JobNotFound
from conveyor.fencing import fenced, is_live
from conveyor.limits import DEFAULT_MAX_PAYLOAD_BYTES, check_reason, check_specs
from conveyor.models import FINAL, EventAction, Job, JobStatus, check_transition, event_json, sources_of
from conveyor.notify import OUTBOX_CHANNEL, notify
from conveyor.schema import events, jobs, outbox

log = logging.getLogger("conveyor.jobs")

FINAL_VALUES = [s.value for s in FINAL]

#: where a write hands the events it committed (``JobStore`` passes its deployment's observers)
Report = Callable[[Sequence[dict[str, Any]]], None]


def unreported(rows: Sequence[dict[str, Any]]) -> None:
    """The default ``report``: a step called on its own tells nobody."""


@dataclass(frozen=True)
class JobSpec:
    """One job to submit (see ``submit``)."""

    kind: str
    payload: Any = None
    tenant: str = "default"
    org: str | None = None
    priority: int = 0
    idempotency_key: str | None = None
    max_attempts: int | None = None
    file_id: str | None = None
    run_at: datetime | None = None
    trace_id: str | None = None


@dataclass(frozen=True)
class Claimed:
    """A job this worker now holds: the attempt it runs under and the entry it came from."""

    job: Job
    entry_id: str
    reclaimed: bool


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, handed to finalize."""

    job_id: str
    attempt_id: int
    entry_id: str
    ok: bool
    result: Any = None
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool = False
    retry_delay_s: float = 0.0
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Finalized:
    """What finalize did with one outcome."""

    job_id: str
    attempt_id: int
    entry_id: str
    action: str  # succeeded | job_failed | retry_scheduled | stale_result
    current_status: str | None = None


def logline(action: str, **fields: Any) -> None:
    """One structured log line per state change."""
    if log.isEnabledFor(logging.INFO):
        present = {k: v for k, v in fields.items() if v is not None}
        log.info("%s %s", action, " ".join(f"{k}={v}" for k, v in present.items()),
                 extra={"conveyor_fields": {"action": action, **present}})


@contextmanager
def _tx(bind: Engine | Connection) -> Iterator[Connection]:
    if isinstance(bind, Connection):
        # join the caller's transaction; a savepoint keeps our part atomic
        if bind.in_transaction():
            with bind.begin_nested():
                yield bind
        else:
            with bind.begin():
                yield bind
    else:
        with bind.begin() as conn:
            yield conn


@contextmanager
def _fast_tx(bind: Engine | Connection) -> Iterator[Connection]:
    """For single statements that commit as a whole: no savepoint, and no BEGIN or COMMIT round trips.

    The caller's open transaction is joined as it is; a connection outside one gets a
    transaction of its own; on PostgreSQL an engine gives an autocommit connection.
    """
    if isinstance(bind, Connection) and bind.in_transaction():
        yield bind
    elif isinstance(bind, Connection):
        with bind.begin():
            yield bind
    else:
        with steps_for(bind).statement_tx(bind) as conn:
            yield conn


def check_json(payload: Any) -> Any:
    """The value as plain JSON types, or InvalidPayload naming what is wrong."""
    return _check_payload(payload)


def _check_payload(payload: Any) -> Any:
    try:
        return json.loads(json.dumps(payload, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidPayload(f"payload is not plain JSON ({exc}); send objects, lists, strings, numbers, "
                             "booleans and null only") from None


def event_row(job_id: str, attempt_id: int, action: EventAction | str, now: datetime,
              file_id: str | None = None, **payload: Any) -> dict[str, Any]:
    """A row for ``conveyor_job_events``."""
    return {"job_id": job_id, "attempt_id": attempt_id, "action": str(getattr(action, "value", action)),
            "payload": {k: v for k, v in payload.items() if v is not None}, "created_at": now,
            "file_id": file_id}


def outbox_row(job_id: str, priority: int, fields: Mapping[str, Any], now: datetime,
               due: datetime | None = None, stream: str = "conveyor:jobs") -> dict[str, Any]:
    """A pending row for ``conveyor_outbox``."""
    return {"job_id": job_id, "stream": stream,
            "message": {"job_id": job_id, "priority": priority, "fields": dict(fields)},
            "status": "pending", "attempts": 0, "next_attempt_at": due or now, "created_at": now}


def republish(conn: Connection, job: Job, now: datetime, stream: str, action: EventAction, *, attempt_id: int,
              attempt_hint: int, **payload: Any) -> list[dict[str, Any]]:
    """Queue ``job`` again through the outbox (a pending row, a NOTIFY on commit) and record why; its events.

    The one way a job already in the database goes back to the queue: the scheduler's
    repair, a worker's release at shutdown and a retry all call it inside their
    transaction, then publish the events and wake the dispatcher after the commit.
    """
    conn.execute(insert(outbox), [outbox_row(job.id, job.priority, _fields(job.id, attempt_hint, job, now),
                                             now, None, stream)])
    notify(conn, OUTBOX_CHANNEL)
    ev = [event_row(job.id, attempt_id, action, now, job.file_id, **payload)]
    conn.execute(insert(events), ev)
    return ev


def pending_outbox(conn: Connection, now: datetime, limit: int) -> list[Any]:
    """Due pending outbox rows, oldest first (on PostgreSQL locked, skipping rows another dispatcher holds)."""
    stmt = (select(outbox.c.id, outbox.c.job_id, outbox.c.message, outbox.c.attempts)
            .where(outbox.c.status == "pending", outbox.c.next_attempt_at <= now)
            .order_by(outbox.c.id).limit(limit))
    return list(conn.execute(steps_for(conn).lock_pending(stmt)).all())


def count_pending_outbox(bind: Engine | Connection) -> int:
    """Outbox rows not yet published."""
    from sqlalchemy import func
    with connection(bind) as conn:
        return int(conn.execute(select(func.count()).where(outbox.c.status == "pending")).scalar() or 0)


def mark_dispatched(conn: Connection, rows: Sequence[Any], entry_ids: Sequence[str], now: datetime
                    ) -> list[dict[str, Any]]:
    """Stamp outbox rows as published under their queue entry ids, with a ``dispatched`` event each; the events."""
    ev = [event_row(r.job_id, 0, EventAction.DISPATCHED, now, stream_entry_id=e, outbox_id=r.id)
          for r, e in zip(rows, entry_ids)]
    steps_for(conn).mark_dispatched(conn, rows, entry_ids, now, ev)
    return ev


def _fields(job_id: str, attempt_hint: int, spec: Any, now: datetime) -> dict[str, str]:
    get = (lambda k: spec.get(k)) if isinstance(spec, Mapping) else (lambda k: getattr(spec, k, None))
    return {"job_id": job_id, "enqueue_ts": str(int(now.timestamp() * 1000)), "attempt_hint": str(attempt_hint),
            "priority": str(get("priority") or 0), "tenant_id": str(get("tenant_id") or get("tenant") or "default"),
            "org_id": str(get("org_id") or get("org") or ""), "trace_id": str(get("trace_id") or "")}


def submit_many(bind: Engine | Connection, specs: Sequence[JobSpec], *, default_max_attempts: int = 3,
                idempotency_ttl_s: float = 86400.0, stream: str = "conveyor:jobs",
                max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, checked: bool = False) -> list[str]:
    """Insert jobs, their outbox rows and ``submitted`` events in one transaction; returns ids.

    Pass a ``Connection`` inside your own transaction to make the jobs part of it:
    nothing is published until that transaction commits. Every spec is checked
    (``conveyor.limits``) before anything is written, unless ``checked`` says the
    caller already did; a refused one raises ``InvalidJob`` and writes nothing.
    """
    return [s.job_id for s in submit_jobs(bind, specs, default_max_attempts=default_max_attempts,
                                          idempotency_ttl_s=idempotency_ttl_s, stream=stream,
                                          max_payload_bytes=max_payload_bytes, checked=checked)]


@dataclass(frozen=True)
class LiveAttempt:
    """A job attempt that is still the live one, inside the transaction that holds its job row locked."""

    conn: Connection
    job_id: str
    attempt_id: int
    attempts: int
    max_attempts: int


@contextmanager
def live_attempt(engine: Engine, job_id: str, attempt_id: int,
                 statuses: tuple[str, ...] = (JobStatus.RUNNING.value,)) -> Iterator[LiveAttempt | None]:
    """A transaction in which ``attempt_id`` is the job's live attempt (its row locked); None when it is not.

    What a plugin writes on ``.conn`` commits only while no newer attempt exists: a worker
    whose lease was lost and whose job was reclaimed gets None, so it can never overwrite
    the newer attempt's work. ``statuses`` widens "live" (a cancelled attempt recording why
    it stopped passes ``("running", "cancelled")``).
    """
    with engine.begin() as conn:
        row = conn.execute(select(jobs.c.attempt_id, jobs.c.status, jobs.c.attempts, jobs.c.max_attempts)
                           .where(jobs.c.id == job_id).with_for_update()).first()
        if row is None or not is_live(row, attempt_id, statuses):
            yield None
            return
        yield LiveAttempt(conn, job_id, attempt_id, int(row.attempts), int(row.max_attempts))


@dataclass(frozen=True)
class Submitted:
    """What one spec of a submit became: a new job (its row as inserted), or the existing job its key names."""

    job_id: str
    row: Mapping[str, Any] | None = field(default=None, repr=False)  # None for an idempotent replay

    @property
    def replayed(self) -> bool:
        """Whether the spec's idempotency key named an existing job, so nothing was inserted for it."""
        return self.row is None

    @property
    def job(self) -> Job | None:
        """The new job as inserted (built on request: a bulk submit wants ids only); None for a replay."""
        return None if self.row is None else Job.from_row({**_UNSET_JOB_FIELDS, **self.row})


_UNSET_JOB_FIELDS = {"result": None, "error_code": None, "last_error": None, "lease_owner": None,
                     "lease_expires_at": None, "started_at": None, "finished_at": None}


def submit_jobs(bind: Engine | Connection, specs: Sequence[JobSpec], *, default_max_attempts: int = 3,
                idempotency_ttl_s: float = 86400.0, stream: str = "conveyor:jobs",
                max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, checked: bool = False,
                report: Report = unreported) -> list[Submitted]:
    """``submit_many``, answering each new job as inserted (so a caller needs no read-back)."""
    now = utcnow()
    if not checked:
        specs = check_specs(specs, max_payload_bytes, now)
    ids: list[str] = []
    job_rows, box_rows, ev_rows = [], [], []
    keyed = any(s.idempotency_key for s in specs)
    dialect = steps_for(bind)
    one_statement = not keyed and dialect.one_statement_submit
    with (_fast_tx(bind) if one_statement else _tx(bind)) as conn:
        for spec in specs:
            if spec.idempotency_key:
                existing = _existing_for_key(conn, spec, now, idempotency_ttl_s)
                if existing is not None:
                    ids.append(existing)
                    continue
            job_id = str(uuid.uuid4())
            ids.append(job_id)
            trace = spec.trace_id or uuid.uuid4().hex
            due = spec.run_at if spec.run_at and spec.run_at > now else None  # naive UTC after the checks
            job_rows.append({
                "id": job_id, "kind": spec.kind, "tenant_id": spec.tenant or "default", "org_id": spec.org,
                "status": JobStatus.QUEUED.value, "priority": spec.priority, "payload": spec.payload,
                "error_history": [], "attempt_id": 0, "attempts": 0,
                "max_attempts": spec.max_attempts or default_max_attempts, "next_attempt_at": due,
                "idempotency_key": spec.idempotency_key, "file_id": spec.file_id, "trace_id": trace,
                "created_at": now, "updated_at": now,
            })
            box_rows.append(outbox_row(job_id, spec.priority,
                                       _fields(job_id, 1, {**spec.__dict__, "trace_id": trace}, now),
                                       now, due, stream))
            ev_rows.append(event_row(job_id, 0, EventAction.SUBMITTED, now, spec.file_id, kind=spec.kind,
                                     run_at=due.isoformat() if due else None))
        if job_rows and one_statement:
            dialect.insert_submitted(conn, job_rows, box_rows, ev_rows, now, stream)
        elif job_rows:
            if keyed:
                for row in job_rows:  # one at a time so a racing duplicate key is resolved, not raised
                    try:
                        with conn.begin_nested():
                            conn.execute(insert(jobs), [row])
                    except IntegrityError:
                        spec = next(s for s in specs if s.idempotency_key == row["idempotency_key"]
                                    and (s.tenant or "default") == row["tenant_id"])
                        other = _existing_for_key(conn, spec, now, idempotency_ttl_s)
                        if other is None:
                            raise
                        ids[ids.index(row["id"])] = other
                        box_rows = [b for b in box_rows if b["job_id"] != row["id"]]
                        ev_rows = [e for e in ev_rows if e["job_id"] != row["id"]]
            else:
                conn.execute(insert(jobs), job_rows)
            if box_rows:
                conn.execute(insert(outbox), box_rows)
                conn.execute(insert(events), ev_rows)
                notify(conn, OUTBOX_CHANNEL)
    report(ev_rows)
    for row in job_rows:
        logline("submitted", job_id=row["id"], kind=row["kind"], trace_id=row["trace_id"])
    inserted = {row["id"]: row for row in job_rows}
    return [Submitted(i, inserted.get(i))
            for i in ids]


def _existing_for_key(conn: Connection, spec: JobSpec, now: datetime, ttl_s: float) -> str | None:
    row = conn.execute(select(jobs.c.id, jobs.c.status, jobs.c.finished_at).where(
        jobs.c.tenant_id == (spec.tenant or "default"), jobs.c.idempotency_key == spec.idempotency_key)).first()
    if row is None:
        return None
    # a key is reusable once its job has been final for longer than the TTL
    if row.status in FINAL_VALUES and row.finished_at is not None and \
            row.finished_at < now - timedelta(seconds=ttl_s):
        conn.execute(update(jobs).where(jobs.c.id == row.id).values(idempotency_key=None))
        return None
    return str(row.id)


def submit(bind: Engine | Connection, kind: str, payload: Any = None, *, tenant: str = "default",
           org: str | None = None, priority: int = 0, idempotency_key: str | None = None,
           max_attempts: int | None = None, file_id: str | None = None, run_at: datetime | None = None,
           trace_id: str | None = None, default_max_attempts: int = 3,
           max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    """Submit one job (row + outbox row + event, one transaction); returns its id."""
    spec = JobSpec(kind, payload, tenant, org, priority, idempotency_key, max_attempts, file_id, run_at, trace_id)
    return submit_many(bind, [spec], default_max_attempts=default_max_attempts, max_payload_bytes=max_payload_bytes)[0]


def get_job(bind: Engine | Connection, job_id: str, tenant: str | None = None) -> Job:
    """Read one job; a tenant filter makes another tenant's job look absent."""
    stmt = select(jobs).where(jobs.c.id == job_id)
    if tenant is not None:
        stmt = stmt.where(jobs.c.tenant_id == tenant)
    with connection(bind) as conn:
        row = conn.execute(stmt).mappings().first()
    if row is None:
        raise JobNotFound(f"no job {job_id!r}" + (f" in tenant {tenant!r}" if tenant else ""))
    return Job.from_row(row)


def get_job_with_events(bind: Engine | Connection, job_id: str, tenant: str | None = None
                        ) -> tuple[Job, list[dict[str, Any]]]:
    """``get_job`` and ``job_events`` on one connection (one statement on PostgreSQL)."""
    with connection(bind) as conn:
        return steps_for(conn).job_with_events(conn, job_id, tenant)


def list_jobs(bind: Engine | Connection, *, status: str | None = None, kind: str | None = None,
              file_id: str | None = None, tenant: str | None = None, org: str | None = None,
              limit: int = 50) -> list[Job]:
    """Newest jobs first, filtered."""
    stmt = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit)
    for col, val in ((jobs.c.status, status), (jobs.c.kind, kind), (jobs.c.file_id, file_id),
                     (jobs.c.tenant_id, tenant), (jobs.c.org_id, org)):
        if val is not None:
            stmt = stmt.where(col == val)
    with connection(bind) as conn:
        return [Job.from_row(r) for r in conn.execute(stmt).mappings()]


def job_events(bind: Engine | Connection, job_id: str) -> list[dict[str, Any]]:
    """The change log of one job, oldest first."""
    with connection(bind) as conn:
        rows = conn.execute(select(events).where(events.c.job_id == job_id).order_by(events.c.id)).mappings()
        from conveyor.models import iso
        return [{"id": r["id"], "attempt_id": r["attempt_id"], "action": r["action"],
                 "payload": r["payload"] or {}, "created_at": iso(r["created_at"])} for r in rows]


# ---------------------------------------------------------------- claim

_CLAIM_QUEUED = (update(jobs)
                 .where(jobs.c.id.in_(bindparam("ids", expanding=True)), jobs.c.status == JobStatus.QUEUED.value,
                        or_(jobs.c.next_attempt_at.is_(None), jobs.c.next_attempt_at <= bindparam("c_now")))
                 .values(status=JobStatus.RUNNING.value, attempt_id=jobs.c.attempt_id + 1,
                         attempts=jobs.c.attempts + 1, lease_owner=bindparam("c_owner"),
                         lease_expires_at=bindparam("c_expires"), started_at=bindparam("c_now"),
                         updated_at=bindparam("c_now"), next_attempt_at=None)
                 .returning(*jobs.c))

def claim(bind: Engine | Connection, entries: Sequence[tuple[str, str]], owner: str, lease_s: float, *,
          report: Report = unreported) -> tuple[list[Claimed], list[str], list[dict[str, Any]]]:
    """Claim jobs for queue entries ``(entry_id, job_id)``.

    A job is claimed from ``queued`` (when due) or from ``running`` with an expired
    lease (a reclaim). ``attempt_id`` and ``attempts`` grow at claim time, so a job
    that kills its worker every time runs out of attempts and ends ``failed``.
    Returns (claimed, entry ids to acknowledge without running, committed events).
    """
    if not entries:
        return [], [], []
    now = utcnow()
    expires = now + timedelta(seconds=lease_s)
    by_job, dup_entries = _by_job(entries)
    with _fast_tx(bind) as conn:
        claimed, ev = _claim_queued(conn, by_job, owner, now, expires)
    return _claim_rest(bind, by_job, dup_entries, claimed, ev, owner, now, expires, report)


def _by_job(entries: Sequence[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """``{job_id: entry_id}``, and the entries naming a job already in the read (run once, acked)."""
    by_job: dict[str, str] = {}
    dup_entries: list[str] = []
    for entry_id, job_id in entries:
        if job_id in by_job:
            dup_entries.append(entry_id)
        else:
            by_job[job_id] = entry_id
    return by_job, dup_entries


def _claim_queued(conn: Connection, by_job: Mapping[str, str], owner: str, now: datetime, expires: datetime
                  ) -> tuple[list[Claimed], list[dict[str, Any]]]:
    return steps_for(conn).claim_queued(conn, by_job, owner, now, expires)


def _claim_queued_general(conn: Connection, by_job: Mapping[str, str], owner: str, now: datetime,
                          expires: datetime) -> tuple[list[Claimed], list[dict[str, Any]]]:
    claimed: list[Claimed] = []
    ev = []
    for r in conn.execute(_CLAIM_QUEUED, {"ids": list(by_job), "c_now": now, "c_owner": owner,
                                          "c_expires": expires}).mappings().all():
        job = Job.from_row(r)
        claimed.append(Claimed(job, by_job[job.id], False))
        ev.append(event_row(job.id, job.attempt_id, EventAction.CLAIMED, now, job.file_id, consumer=owner,
                            entry_id=by_job[job.id]))
    if ev:
        conn.execute(insert(events), ev)
    return claimed, ev


def _claim_rest(bind: Engine | Connection, by_job: Mapping[str, str], dup_entries: list[str],
                claimed: list[Claimed], ev: list[dict[str, Any]], owner: str, now: datetime, expires: datetime,
                report: Report) -> tuple[list[Claimed], list[str], list[dict[str, Any]]]:
    """After the queued jobs are claimed: take over expired leases, publish, and name the entries to skip."""
    queued = {c.job.id for c in claimed}
    rest = [j for j in by_job if j not in queued]
    if rest:
        reclaimed, more = _reclaim_expired(bind, rest, by_job, owner, now, expires)
        claimed = claimed + reclaimed
        ev = ev + more
    if not isinstance(bind, Connection):  # in a caller's transaction, the caller reports after its commit
        report(ev)
    got = {c.job.id for c in claimed}
    # entries whose job is final, gone, not due, or held under a live lease: the DB has
    # another path for each (its pending outbox row, its holder, the repair loop)
    skip = dup_entries + [e for j, e in by_job.items() if j not in got]
    for c in claimed if log.isEnabledFor(logging.INFO) else ():
        logline("reclaimed" if c.reclaimed else "claimed", job_id=c.job.id, attempt_id=c.job.attempt_id,
                stream_entry_id=c.entry_id, consumer=owner, trace_id=c.job.trace_id)
    return claimed, skip, ev


def claim_commits_outcomes(engine: Engine) -> bool:
    """Whether ``claim_and_finalize`` commits outcomes in the claim's own statement here (PostgreSQL)."""
    return steps_for(engine).claim_commits_outcomes


def claim_and_finalize(engine: Engine, entries: Sequence[tuple[str, str]], owner: str, lease_s: float,
                       outcomes: Sequence[Outcome], *, report: Report = unreported
                       ) -> tuple[list[Claimed], list[str], list[Finalized], list[Outcome]]:
    """PostgreSQL: record the fenced successes among ``outcomes`` and claim ``entries`` in one statement.

    The same rules as ``succeed`` then ``claim``, in one round trip and one commit.
    Returns (claimed, entry ids to acknowledge without running, finalized, outcomes
    left for ``finalize``: failures, stale attempts, results that are not JSON).
    """
    if not claim_commits_outcomes(engine):
        raise ValueError("claim_and_finalize needs PostgreSQL; use finalize and claim")
    ok, entry_of = _success_rows(outcomes)
    if not ok or not entries:
        claimed, skip, _ = claim(engine, entries, owner, lease_s, report=report)
        return claimed, skip, [], list(outcomes)
    now = utcnow()
    expires = now + timedelta(seconds=lease_s)
    by_job, dup_entries = _by_job(entries)
    with _fast_tx(engine) as conn:
        got_done, ev_done, got_claimed, ev_claimed = steps_for(engine).succeed_and_claim(
            conn, ok, now, by_job, owner, expires)
    report(ev_done)
    done = [Finalized(j, a, entry_of[j], "succeeded") for j, a, _ in ok if j in got_done]
    left = [o for o in outcomes if not (o.ok and o.job_id in got_done)]
    claimed = [Claimed(job, entry_id, False) for job, entry_id in got_claimed]
    claimed, skip, _ = _claim_rest(engine, by_job, dup_entries, claimed, ev_claimed, owner, now, expires, report)
    if log.isEnabledFor(logging.INFO):
        for d in done:
            logline(d.action, job_id=d.job_id, attempt_id=d.attempt_id, stream_entry_id=d.entry_id)
    return claimed, skip, done, left


def _reclaim_expired(bind: Engine | Connection, rest: Sequence[str], by_job: Mapping[str, str], owner: str,
                     now: datetime, expires: datetime) -> tuple[list[Claimed], list[dict[str, Any]]]:
    """Take over running jobs among ``rest`` whose lease expired (or fail them on their last attempt)."""
    claimed: list[Claimed] = []
    ev: list[dict[str, Any]] = []
    with _tx(bind) as conn:
        expired = conn.execute(select(jobs).where(
            jobs.c.id.in_(rest), jobs.c.status == JobStatus.RUNNING.value,
            jobs.c.lease_expires_at < now)).mappings().all()
        for r in expired:
            old = Job.from_row(r)
            history = old.error_history + [{
                "attempt": old.attempt_id, "code": "lease_lost", "at": now.isoformat() + "Z",
                "message": f"lease of {old.lease_owner} expired at {old.lease_expires_at}; worker presumed dead"}]
            if old.attempts >= old.max_attempts:
                ev.extend(fail_exhausted(conn, old, now, by=owner))
                continue
            new = conn.execute(
                update(jobs).where(fenced(old.id, old.attempt_id))
                .values(attempt_id=jobs.c.attempt_id + 1, attempts=jobs.c.attempts + 1, lease_owner=owner,
                        lease_expires_at=expires, started_at=now, updated_at=now, error_history=history,
                        last_error=history[-1]["message"], error_code="lease_lost")
                .returning(*jobs.c)).mappings().first()
            if new is not None:
                job = Job.from_row(new)
                claimed.append(Claimed(job, by_job[job.id], True))
                ev.append(event_row(job.id, job.attempt_id, EventAction.RECLAIMED, now, job.file_id,
                                    consumer=owner, previous_owner=old.lease_owner,
                                    previous_attempt=old.attempt_id, entry_id=by_job[job.id]))
        if ev:
            conn.execute(insert(events), ev)
    return claimed, ev


def fail_exhausted(conn: Connection, job: Job, now: datetime, by: str) -> list[dict[str, Any]]:
    """Fail a running job whose lease expired on its last attempt (``lease_lost``); returns its event.

    Attempts are counted at claim, so a job that kills its worker every time ends here
    instead of crash-looping.
    """
    msg = (f"lease of {job.lease_owner} expired at {job.lease_expires_at} on the last attempt "
           f"({job.attempts}/{job.max_attempts}); the job probably kills or hangs its worker")
    history = [*job.error_history, {"attempt": job.attempt_id, "code": "lease_lost", "message": msg,
                                    "at": now.isoformat() + "Z"}]
    res = conn.execute(update(jobs).where(fenced(job.id, job.attempt_id))
                       .values(status=JobStatus.FAILED.value, error_code="lease_lost", last_error=msg,
                               error_history=history, lease_owner=None, lease_expires_at=None, finished_at=now,
                               updated_at=now))
    if not res.rowcount:
        return []
    return [event_row(job.id, job.attempt_id, EventAction.JOB_FAILED, now, job.file_id, error_code="lease_lost",
                      error_message=msg, attempts=job.attempts, by=by)]


# ---------------------------------------------------------------- heartbeat

def renew(engine: Engine, owner: str, held: Mapping[str, int], lease_s: float, *,
          report: Report = unreported) -> dict[str, str]:
    """Extend the leases of held jobs ``{job_id: attempt_id}``; returns lost ones with a reason."""
    if not held:
        return {}
    now = utcnow()
    with engine.begin() as conn:
        kept = {r.id: r.attempt_id for r in conn.execute(
            update(jobs).where(jobs.c.id.in_(list(held)), jobs.c.lease_owner == owner,
                               jobs.c.status == JobStatus.RUNNING.value)
            .values(lease_expires_at=now + timedelta(seconds=lease_s), updated_at=now)
            .returning(jobs.c.id, jobs.c.attempt_id))}
        lost = {j: a for j, a in held.items() if kept.get(j) != a}
        if not lost:
            return {}
        reasons: dict[str, str] = {}
        rows = conn.execute(select(jobs.c.id, jobs.c.status, jobs.c.attempt_id, jobs.c.file_id, jobs.c.error_code)
                            .where(jobs.c.id.in_(list(lost)))).all()
        ev = []
        for r in rows:
            if (r.attempt_id == lost[r.id] and r.error_code != "lease_lost"
                    and r.status not in (JobStatus.RUNNING.value, JobStatus.CANCELLED.value)):
                continue  # this attempt's own finalize committed after the heartbeat looked: nothing lost
            reasons[r.id] = "cancelled" if r.status == JobStatus.CANCELLED.value else "lease_lost"
            if reasons[r.id] == "lease_lost":
                ev.append(event_row(r.id, lost[r.id], EventAction.LEASE_LOST, now, r.file_id, consumer=owner,
                                    current_attempt=r.attempt_id, current_status=r.status))
        if ev:
            conn.execute(insert(events), ev)
    report(ev)
    for j, why in reasons.items():
        logline("lease_lost" if why == "lease_lost" else "cancel_seen", job_id=j, attempt_id=lost[j], consumer=owner)
    return reasons


# ---------------------------------------------------------------- finalize

_FIN_COLS = (jobs.c.id, jobs.c.status, jobs.c.attempt_id, jobs.c.attempts, jobs.c.max_attempts,
             jobs.c.error_history, jobs.c.priority, jobs.c.file_id, jobs.c.tenant_id, jobs.c.org_id, jobs.c.trace_id)
_FIN_SELECT = select(*_FIN_COLS).where(jobs.c.id.in_(bindparam("ids", expanding=True)))
# one statement for a whole batch of successes (executemany); the attempt_id guard is the fence
_SUCCEED = (update(jobs)
            .where(fenced(bindparam("b_id"), bindparam("b_attempt")))
            .values(status=JobStatus.SUCCEEDED.value, result=bindparam("b_result", type_=JSON), error_code=None,
                    finished_at=bindparam("b_now"), updated_at=bindparam("b_now"), lease_owner=None,
                    lease_expires_at=None))


def finalize(engine: Engine, outcomes: Sequence[Outcome], *, stream: str = "conveyor:jobs",
             ack: Callable[[Connection, list[str]], object] | None = None, report: Report = unreported
             ) -> tuple[list[Finalized], list[dict[str, Any]]]:
    """Record many attempt outcomes in one transaction, each fenced by ``attempt_id``.

    A stale attempt (its lease was taken over, or the job was cancelled) changes
    nothing but a ``stale_result`` event. ``ack``, if given, acknowledges the
    entries inside the same transaction (a queue living in the job database).
    Returns what happened to each outcome and the committed events.
    """
    if not outcomes:
        return [], []
    now = utcnow()
    done: list[Finalized] = []
    ev: list[dict[str, Any]] = []
    succeed: list[dict[str, Any]] = []
    dialect = steps_for(engine)
    if dialect.one_statement_succeed:
        done, ev, outcomes = _finalize_successes(engine, outcomes, now, ack)
        if not outcomes:
            report(ev)
            if log.isEnabledFor(logging.INFO):
                for d in done:
                    logline(d.action, job_id=d.job_id, attempt_id=d.attempt_id, stream_entry_id=d.entry_id)
            return done, ev
    fast_done, fast_ev = list(done), list(ev)
    with engine.begin() as conn:
        # the rows are locked (FOR UPDATE, or SQLite's write lock) until commit, so what we read is current
        current = {r.id: r for r in conn.execute(dialect.lock_for_finalize(_FIN_SELECT),
                                                 {"ids": [o.job_id for o in outcomes]})}
        for o in outcomes:
            job = current.get(o.job_id)
            if job is None or not is_live(job, o.attempt_id):
                status = job.status if job else None
                ev.append(event_row(o.job_id, o.attempt_id, EventAction.STALE_RESULT, now,
                                    job.file_id if job else None, current_status=status,
                                    current_attempt=job.attempt_id if job else None,
                                    discarded="result" if o.ok else f"error {o.error_code}"))
                done.append(Finalized(o.job_id, o.attempt_id, o.entry_id, "stale_result", status))
                log.log(logging.INFO if status in ("cancelled", "queued") else logging.WARNING,
                        "stale_result job_id=%s attempt_id=%s current_attempt=%s status=%s: result discarded",
                        o.job_id, o.attempt_id, job.attempt_id if job else None, status)
                continue
            if o.ok:
                try:
                    result = _check_payload(o.result)
                except InvalidPayload as exc:
                    o = Outcome(o.job_id, o.attempt_id, o.entry_id, ok=False, error_code="internal_error",
                                error_message=f"result cannot be stored: {exc}")
            if o.ok:
                succeed.append({"b_id": o.job_id, "b_attempt": o.attempt_id, "b_result": result, "b_now": now})
                ev.append(event_row(o.job_id, o.attempt_id, EventAction.SUCCEEDED, now, job.file_id))
                done.append(Finalized(o.job_id, o.attempt_id, o.entry_id, "succeeded"))
                continue
            fence = fenced(o.job_id, o.attempt_id)
            base = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
            entry = {"attempt": o.attempt_id, "code": o.error_code, "message": (o.error_message or "")[:4000],
                     "at": now.isoformat() + "Z"}
            if o.details:
                entry["details"] = _check_payload(dict(o.details))
            history = list(job.error_history or []) + [entry]
            err = {"error_code": o.error_code, "last_error": (o.error_message or "")[:4000], "error_history": history}
            if o.retryable and job.attempts < job.max_attempts:
                due = now + timedelta(seconds=o.retry_delay_s)
                conn.execute(update(jobs).where(fence).values(
                    status=JobStatus.QUEUED.value, next_attempt_at=due, **err, **base))
                conn.execute(insert(outbox), [outbox_row(o.job_id, job.priority,
                                                         _fields(job.id, job.attempts + 1, job, now), now, due,
                                                         stream)])
                notify(conn, OUTBOX_CHANNEL)
                ev.append(event_row(o.job_id, o.attempt_id, EventAction.RETRY_SCHEDULED, now, job.file_id,
                                    error_code=o.error_code, error_message=entry["message"],
                                    retry_at=due.isoformat() + "Z", delay_s=round(o.retry_delay_s, 3)))
                done.append(Finalized(o.job_id, o.attempt_id, o.entry_id, "retry_scheduled"))
            else:
                conn.execute(update(jobs).where(fence).values(
                    status=JobStatus.FAILED.value, finished_at=now, **err, **base))
                ev.append(event_row(o.job_id, o.attempt_id, EventAction.JOB_FAILED, now, job.file_id,
                                    error_code=o.error_code, error_message=entry["message"],
                                    attempts=job.attempts, retryable=o.retryable))
                done.append(Finalized(o.job_id, o.attempt_id, o.entry_id, "job_failed"))
        if succeed:
            conn.execute(_SUCCEED, succeed)
        conn.execute(insert(events), ev[len(fast_ev):])
        if ack is not None:
            ack(conn, [d.entry_id for d in done[len(fast_done):]])
    report(ev)
    if log.isEnabledFor(logging.INFO):
        for d in done:
            logline(d.action, job_id=d.job_id, attempt_id=d.attempt_id, stream_entry_id=d.entry_id)
    return done, ev


def _success_rows(outcomes: Sequence[Outcome]) -> tuple[list[tuple[str, int, str | None]], dict[str, str]]:
    """The successes as ``(job_id, attempt_id, result as JSON text)``, and each one's entry id.

    A result that is not plain JSON is left out: the general path records it as internal_error.
    """
    ok: list[tuple[str, int, str | None]] = []
    entry: dict[str, str] = {}
    for o in outcomes:
        if o.ok:
            try:
                ok.append((o.job_id, o.attempt_id, None if o.result is None else
                           json.dumps(o.result, allow_nan=False)))
                entry[o.job_id] = o.entry_id
            except (TypeError, ValueError):
                pass
    return ok, entry


def _finalize_successes(engine: Engine, outcomes: Sequence[Outcome], now: datetime,
                        ack: Callable[[Connection, list[str]], object] | None
                        ) -> tuple[list[Finalized], list[dict[str, Any]], list[Outcome]]:
    """PostgreSQL: commit the fenced successes in one statement; returns what is left for the general path."""
    ok, entry = _success_rows(outcomes)
    if not ok:
        return [], [], list(outcomes)
    with (engine.begin() if ack is not None else _fast_tx(engine)) as conn:
        got, ev = steps_for(engine).succeed(conn, ok, now)
        done = [Finalized(j, a, entry[j], "succeeded") for j, a, _ in ok if j in got]
        if ack is not None and done:
            ack(conn, [d.entry_id for d in done])
    return done, ev, [o for o in outcomes if not (o.ok and o.job_id in got)]

# ---------------------------------------------------------------- cancel / transitions

def transition(bind: Engine | Connection, job_id: str, target: JobStatus, *, tenant: str | None = None,
               **values: Any) -> Job:
    """Move a job to ``target`` if the state machine allows it (CAS on the current status)."""
    now = utcnow()
    with _tx(bind) as conn:
        stmt = select(jobs).where(jobs.c.id == job_id)
        if tenant is not None:
            stmt = stmt.where(jobs.c.tenant_id == tenant)
        row = conn.execute(stmt).mappings().first()
        if row is None:
            raise JobNotFound(f"no job {job_id!r}")
        job = Job.from_row(row)
        check_transition(job_id, job.status, target)
        res = conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == job.status.value,
                                              jobs.c.attempt_id == job.attempt_id,
                                              jobs.c.status.in_(sources_of(target)))
                           .values(status=target.value, updated_at=now, **values))
        if res.rowcount != 1:
            raise IllegalTransition(job_id, job.status.value, target.value)
        return get_job(conn, job_id)


def cancelled_among(engine: Engine, job_ids: Sequence[str]) -> list[str]:
    """Which of these jobs have been cancelled."""
    with engine.connect() as conn:
        return list(conn.execute(select(jobs.c.id).where(jobs.c.id.in_(list(job_ids)),
                                                         jobs.c.status == JobStatus.CANCELLED.value)).scalars())


def cancel(bind: Engine | Connection, job_id: str, *, tenant: str | None = None, reason: str = "",
           report: Report = unreported) -> Job:
    """Cancel a queued or running job; a running handler stops at its next heartbeat."""
    reason = check_reason(reason)
    now = utcnow()
    with _tx(bind) as conn:
        job = transition(conn, job_id, JobStatus.CANCELLED, tenant=tenant, finished_at=now, error_code="cancelled",
                         last_error=reason or "cancelled by request", lease_owner=None, lease_expires_at=None)
        ev = [event_row(job_id, job.attempt_id, EventAction.CANCELLED, now, job.file_id, reason=reason or None)]
        conn.execute(insert(events), ev)
    report(ev)
    logline("cancelled", job_id=job_id, attempt_id=job.attempt_id)
    return job


def release(engine: Engine, owner: str, held: Mapping[str, int], *, stream: str = "conveyor:jobs",
            report: Report = unreported) -> list[str]:
    """Hand held jobs back (graceful shutdown): ``queued`` again, the attempt not counted, republished.

    The released attempts are fenced out: if their handlers still return, finalize
    finds the job no longer running under their attempt and discards the result.
    """
    if not held:
        return []
    now = utcnow()
    released = []
    released_events: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for job_id, attempt in held.items():
            row = conn.execute(
                update(jobs).where(fenced(job_id, attempt), jobs.c.lease_owner == owner)
                .values(status=JobStatus.QUEUED.value, attempts=jobs.c.attempts - 1, lease_owner=None,
                        lease_expires_at=None, updated_at=now, next_attempt_at=None)
                .returning(*jobs.c)).mappings().first()
            if row is None:
                continue
            job = Job.from_row(row)
            released_events += republish(conn, job, now, stream, EventAction.RELEASED, attempt_id=attempt,
                                         attempt_hint=job.attempts + 1, consumer=owner, reason="worker shutdown")
            released.append(job_id)
    report(released_events)
    for j in released:
        logline("released", job_id=j, attempt_id=held[j], consumer=owner)
    return released


# ---------------------------------------------------------------- retry / pages / counts

RETRYABLE_FROM = (JobStatus.FAILED.value, JobStatus.CANCELLED.value)


def retry(bind: Engine | Connection, job_id: str, *, tenant: str | None = None, stream: str = "conveyor:jobs",
          report: Report = unreported) -> Job:
    """Run a failed or cancelled job again: ``queued`` with a fresh attempt budget, republished.

    One transaction writes the job row (a CAS on its status and ``attempt_id``), a
    pending outbox row and a ``retried`` event. ``attempts`` restarts at 0, so the job
    gets its ``max_attempts`` again; ``attempt_id`` keeps growing at the next claim, so
    a late result of an earlier attempt is still fenced out. ``error_history`` is kept.
    Raises JobNotFound (none in this tenant) or IllegalTransition (not failed or cancelled).
    """
    now = utcnow()
    with _tx(bind) as conn:
        stmt = select(jobs).where(jobs.c.id == job_id)
        if tenant is not None:
            stmt = stmt.where(jobs.c.tenant_id == tenant)
        row = conn.execute(stmt).mappings().first()
        if row is None:
            raise JobNotFound(f"no job {job_id!r}")
        old = Job.from_row(row)
        if old.status.value not in RETRYABLE_FROM:
            raise IllegalTransition(job_id, old.status.value, JobStatus.QUEUED.value)
        new = conn.execute(
            update(jobs).where(jobs.c.id == job_id, jobs.c.status == old.status.value,
                               jobs.c.attempt_id == old.attempt_id)
            .values(status=JobStatus.QUEUED.value, attempts=0, result=None, error_code=None, last_error=None,
                    lease_owner=None, lease_expires_at=None, next_attempt_at=None, finished_at=None,
                    updated_at=now)
            .returning(*jobs.c)).mappings().first()
        if new is None:
            raise IllegalTransition(job_id, old.status.value, JobStatus.QUEUED.value)
        job = Job.from_row(new)
        ev = republish(conn, job, now, stream, EventAction.RETRIED, attempt_id=job.attempt_id,
                       attempt_hint=job.attempt_id + 1, previous_status=old.status.value,
                       previous_error_code=old.error_code)
    report(ev)
    logline("retried", job_id=job_id, attempt_id=job.attempt_id, previous_status=old.status.value)
    return job


@dataclass(frozen=True)
class Scope:
    """Which jobs a reader may see: one tenant (None: every tenant) and one org (None: every org)."""

    tenant: str | None
    org: str | None = None

    def where(self, stmt: Any) -> Any:
        """``stmt`` narrowed to this scope (on ``conveyor_jobs`` columns)."""
        if self.tenant is not None:
            stmt = stmt.where(jobs.c.tenant_id == self.tenant)
        if self.org is not None:
            stmt = stmt.where(jobs.c.org_id == self.org)
        return stmt

    def allows(self, job: Job) -> bool:
        """Whether a job read without this scope is inside it."""
        return (self.tenant is None or job.tenant_id == self.tenant) and (self.org is None or job.org_id == self.org)


def page_query(scope: Scope, *, status: str | None = None, kind: str | None = None, file_id: str | None = None,
               limit: int = 50, before: tuple[datetime, str] | None = None) -> Any:
    """The statement of ``page_jobs`` (a test checks with EXPLAIN that it reads an index, not the table)."""
    stmt = scope.where(select(jobs)).order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
    for col, val in ((jobs.c.status, status), (jobs.c.kind, kind), (jobs.c.file_id, file_id)):
        if val is not None:
            stmt = stmt.where(col == val)
    if before is not None:
        at, last_id = before
        stmt = stmt.where(or_(jobs.c.created_at < at, and_(jobs.c.created_at == at, jobs.c.id < last_id)))
    return stmt


def page_jobs(bind: Engine | Connection, scope: Scope, *, status: str | None = None, kind: str | None = None,
              file_id: str | None = None, limit: int = 50, before: tuple[datetime, str] | None = None
              ) -> list[Job]:
    """One page of jobs, newest first (``created_at``, then ``id``, both descending).

    ``before`` is the ``(created_at, id)`` of the last job of the previous page; the
    page holds the jobs strictly after it in that order.
    """
    stmt = page_query(scope, status=status, kind=kind, file_id=file_id, limit=limit, before=before)
    with connection(bind) as conn:
        return [Job.from_row(r) for r in conn.execute(stmt).mappings()]


def count_by_status(bind: Engine | Connection, scope: Scope) -> dict[str, int]:
    """How many jobs in ``scope`` are in each status (every status named, 0 when none)."""
    from sqlalchemy import func
    stmt = scope.where(select(jobs.c.status, func.count()).select_from(jobs).group_by(jobs.c.status))
    counts = {s.value: 0 for s in JobStatus}
    with connection(bind) as conn:
        counts.update({str(st): int(n) for st, n in conn.execute(stmt)})
    return counts


def count_active(bind: Engine | Connection, tenant: str) -> int:
    """Jobs of one tenant that are queued or running."""
    from sqlalchemy import func
    stmt = select(func.count()).select_from(jobs).where(
        jobs.c.tenant_id == tenant, jobs.c.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
    with connection(bind) as conn:
        return int(conn.execute(stmt).scalar() or 0)


def events_after(bind: Engine | Connection, after: int, upto: int, scope: Scope, job_id: str | None = None,
                 limit: int = 500) -> list[dict[str, Any]]:
    """Events with ``after < id <= upto`` of the jobs in ``scope`` (and of one job), oldest first."""
    stmt = (select(events, jobs.c.tenant_id, jobs.c.org_id).join(jobs, jobs.c.id == events.c.job_id)
            .where(events.c.id > after, events.c.id <= upto).order_by(events.c.id).limit(limit))
    stmt = scope.where(stmt)
    if job_id is not None:
        stmt = stmt.where(events.c.job_id == job_id)
    with connection(bind) as conn:
        return [{"id": r["id"], **event_json(r)} for r in conn.execute(stmt).mappings()]


def event_ids_after(bind: Engine | Connection, after: int, limit: int = 1000) -> list[tuple[int, datetime]]:
    """Ids and times of every committed event after ``after`` (all jobs), for gap detection."""
    stmt = select(events.c.id, events.c.created_at).where(events.c.id > after).order_by(events.c.id).limit(limit)
    with connection(bind) as conn:
        return [(int(r.id), r.created_at) for r in conn.execute(stmt)]


def last_event_id(bind: Engine | Connection) -> int:
    """The highest event id committed so far (0 when there is none)."""
    from sqlalchemy import func
    with connection(bind) as conn:
        return int(conn.execute(select(func.max(events.c.id))).scalar() or 0)


# ---------------------------------------------------------------- what differs by database


class _General:
    """The steps whose SQL differs by database, in their general form (SQLite, and any database SQLAlchemy speaks).

    ``_Postgres`` overrides them with PostgreSQL's one-statement forms (``store_postgres``)
    and row locks; ``steps_for(bind)`` picks the implementation from the database's dialect, so
    the steps above never branch on it. The rules (fencing, transitions) stay in the steps.
    """

    #: a submit without idempotency keys is one statement (jobs, outbox rows, events, NOTIFY)
    one_statement_submit = False
    #: a batch of successes is committed by one statement before the general finalize path
    one_statement_succeed = False
    #: a claim's statement can also commit finished outcomes (``claim_and_finalize``)
    claim_commits_outcomes = False

    def statement_tx(self, engine: Engine) -> Any:
        """A connection for statements that commit as a whole (a transaction of their own here)."""
        return engine.begin()

    def lock_pending(self, stmt: Any) -> Any:
        """``stmt`` (the dispatcher's read of pending outbox rows), locked against other dispatchers if possible."""
        return stmt

    def lock_for_finalize(self, stmt: Any) -> Any:
        """``stmt`` (finalize's read of the jobs), locking the rows until commit (SQLite's write lock does)."""
        return stmt

    def insert_submitted(self, conn: Connection, job_rows: list[dict[str, Any]], box_rows: list[dict[str, Any]],
                         ev_rows: list[dict[str, Any]], now: datetime, stream: str) -> None:
        """The one-statement submit (only where ``one_statement_submit``)."""
        raise NotImplementedError

    def job_with_events(self, conn: Connection, job_id: str, tenant: str | None
                        ) -> tuple[Job, list[dict[str, Any]]]:
        """A job and its change log."""
        return get_job(conn, job_id, tenant), job_events(conn, job_id)

    def claim_queued(self, conn: Connection, by_job: Mapping[str, str], owner: str, now: datetime,
                     expires: datetime) -> tuple[list[Claimed], list[dict[str, Any]]]:
        """Claim the queued jobs among ``by_job``, with their ``claimed`` events."""
        return _claim_queued_general(conn, by_job, owner, now, expires)

    def succeed(self, conn: Connection, ok: list[tuple[str, int, str | None]], now: datetime
                ) -> tuple[set[str], list[dict[str, Any]]]:
        """The one-statement record of fenced successes (only where ``one_statement_succeed``)."""
        raise NotImplementedError

    def succeed_and_claim(self, conn: Connection, ok: list[tuple[str, int, str | None]], now: datetime,
                          by_job: Mapping[str, str], owner: str, expires: datetime) -> Any:
        """Successes and a claim in one statement (only where ``claim_commits_outcomes``)."""
        raise NotImplementedError

    def mark_dispatched(self, conn: Connection, rows: Sequence[Any], entry_ids: Sequence[str], now: datetime,
                        ev: list[dict[str, Any]]) -> None:
        """Stamp outbox rows as published and write their ``dispatched`` events ``ev``."""
        conn.execute(update(outbox).where(outbox.c.id == bindparam("oid")).values(
            status="dispatched", dispatched_at=now, stream_entry_id=bindparam("eid"), attempts=bindparam("n")),
            [{"oid": r.id, "eid": e, "n": r.attempts + 1} for r, e in zip(rows, entry_ids)])
        conn.execute(insert(events), ev)


class _Postgres(_General):
    """PostgreSQL: each step one statement (a CTE that changes rows and writes their events), rows locked."""

    one_statement_submit = True
    one_statement_succeed = True
    claim_commits_outcomes = True

    @contextmanager
    def statement_tx(self, engine: Engine) -> Iterator[Connection]:
        """An autocommit connection: a single statement commits by itself, with no BEGIN or COMMIT round trip."""
        with engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    def lock_pending(self, stmt: Any) -> Any:
        """Rows another dispatcher holds are skipped, not waited for."""
        return stmt.with_for_update(skip_locked=True)

    def lock_for_finalize(self, stmt: Any) -> Any:
        """``FOR UPDATE``: the rows stay as read until commit."""
        return stmt.with_for_update()

    def insert_submitted(self, conn: Connection, job_rows: list[dict[str, Any]], box_rows: list[dict[str, Any]],
                         ev_rows: list[dict[str, Any]], now: datetime, stream: str) -> None:
        """Jobs, outbox rows and events from arrays, and ``pg_notify``, in one statement."""
        store_postgres.insert_submitted(conn, job_rows, box_rows, ev_rows, now, stream)

    def job_with_events(self, conn: Connection, job_id: str, tenant: str | None
                        ) -> tuple[Job, list[dict[str, Any]]]:
        """One statement for both."""
        found = store_postgres.job_with_events(conn, job_id, tenant)
        if found is None:
            raise JobNotFound(f"no job {job_id!r}" + (f" in tenant {tenant!r}" if tenant else ""))
        return found

    def claim_queued(self, conn: Connection, by_job: Mapping[str, str], owner: str, now: datetime,
                     expires: datetime) -> tuple[list[Claimed], list[dict[str, Any]]]:
        """One statement: the claim and its events."""
        got, ev = store_postgres.claim_queued(conn, by_job, owner, now, expires)
        return [Claimed(job, entry_id, False) for job, entry_id in got], ev

    def succeed(self, conn: Connection, ok: list[tuple[str, int, str | None]], now: datetime
                ) -> tuple[set[str], list[dict[str, Any]]]:
        """One statement: the fenced successes and their events."""
        return store_postgres.succeed(conn, ok, now)

    def succeed_and_claim(self, conn: Connection, ok: list[tuple[str, int, str | None]], now: datetime,
                          by_job: Mapping[str, str], owner: str, expires: datetime) -> Any:
        """One statement: the fenced successes, then the claim, with their events."""
        return store_postgres.succeed_and_claim(conn, ok, now, by_job, owner, expires)

    def mark_dispatched(self, conn: Connection, rows: Sequence[Any], entry_ids: Sequence[str], now: datetime,
                        ev: list[dict[str, Any]]) -> None:
        """One statement: the stamps and their events."""
        store_postgres.mark_dispatched(conn, [(r.id, e) for r, e in zip(rows, entry_ids)], now)


_GENERAL = _General()
#: dialect name → its implementation of the steps that differ (the general one for any other)
_DIALECTS: dict[str, _General] = {"postgresql": _Postgres()}


def steps_for(bind: Engine | Connection) -> _General:
    """The implementation of the database-specific steps for ``bind``'s database."""
    return _DIALECTS.get(bind.dialect.name, _GENERAL)
