"""``conveyor diagnose`` and ``conveyor doctor``: the runbooks, automated."""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, text

from conveyor import lease
from conveyor.config import mask_url
from conveyor.db import missing_tables, utcnow
from conveyor.errors import ConfigError, JobNotFound, SchemaTooNew
from conveyor.presence import list_workers
from conveyor.scheduler import LEADER_LEASE
from conveyor.schema import outbox

log = logging.getLogger("conveyor.diagnostics")

if TYPE_CHECKING:
    from conveyor.app import Conveyor


def _finding(check: str, ok: bool, detail: str, next_step: str | None = None) -> dict[str, Any]:
    return {"check": check, "ok": ok, "detail": detail, "next_step": next_step}


def diagnose(app: Conveyor, job_id: str, tenant: str | None = None, org: str | None = None) -> dict[str, Any]:
    """Everything known about one job, the most likely root cause and the next step.

    ``tenant`` (and ``org``): the job must be theirs (JobNotFound otherwise). In a
    database-per-tenant deployment they also pick the database to look in, when ``app``
    is the control one; ``tenant`` is required then.
    """
    if app.tenancy is not None and app.tenant_key is None:
        if tenant is None:
            raise ConfigError(f"this deployment keeps a database per tenant ({app.settings.tenancy}): "
                              "name the job's tenant" + (" and org" if app.tenancy.per_org else ""))
        app = app.for_tenant(tenant, org)
    job = app.get(job_id, tenant)
    if org is not None and job.org_id != org:
        raise JobNotFound(f"no job {job_id!r} in org {org!r}")
    now = utcnow()
    evs = app.events(job_id)
    findings: list[dict[str, Any]] = []
    with app.engine.connect() as conn:
        box = [dict(r) for r in conn.execute(select(outbox).where(outbox.c.job_id == job_id)
                                             .order_by(outbox.c.id)).mappings()]
    control = app.control.engine  # processes and the leader lease are there
    alive = {w["name"]: w for w in list_workers(control) if w["alive"]}
    kind_known = job.kind in app.kinds
    if app.tenant_key is not None:
        findings.append(_finding("tenant database", True, f"{app.tenant_key}: {mask_url(app.settings.db_url)}"))
    findings.append(_finding("job kind", kind_known,
                             f"{job.kind} is registered by {app.kinds.owner(job.kind)}" if kind_known else
                             f"{job.kind} is not registered by any plugin loaded here",
                             None if kind_known else "install the plugin providing it on every worker"))
    latest = box[-1] if box else None
    held: bool | None = None
    queue_error = None
    if latest and latest["stream_entry_id"]:
        try:
            held = latest["stream_entry_id"] in app.queue.held([latest["stream_entry_id"]])
        except Exception as exc:
            queue_error = f"{type(exc).__name__}: {exc}"
    if latest:
        findings.append(_finding(
            "outbox", latest["status"] == "dispatched" or not latest["last_error"],
            f"{len(box)} row(s); latest {latest['status']}, attempts {latest['attempts']}"
            + (f", last error: {latest['last_error']}" if latest["last_error"] else "")
            + (f", entry {latest['stream_entry_id']}" if latest["stream_entry_id"] else "")))
    if queue_error:
        findings.append(_finding("queue", False, f"queue unreachable: {queue_error}", "check CONVEYOR_QUEUE_URL"))
    elif held is not None:
        findings.append(_finding("queue entry", held or job.status.final,
                                 f"entry {latest['stream_entry_id'] if latest else '?'} "
                                 f"{'is held by the queue' if held else 'is no longer in the queue'}"))
    if job.lease_owner:
        live = job.lease_expires_at is not None and job.lease_expires_at > now
        findings.append(_finding("lease", live, f"held by {job.lease_owner} until {job.lease_expires_at}"
                                 f" ({'live' if live else 'expired'}); owner "
                                 f"{'is alive' if job.lease_owner in alive else 'is not a live worker'}"))
    leader = lease.current(control, LEADER_LEASE)
    has_leader = bool(leader and leader["holder"] and leader["expires_at"] and leader["expires_at"] > now)
    leader_text = f"leader {leader['holder']}" if leader and has_leader else "no scheduler holds the leader lease"
    final = job.status.final  # nothing left to repair: no leader is no problem for this job
    findings.append(_finding("scheduler", has_leader or final, leader_text,
                             None if has_leader or final else "start `conveyor scheduler` so lost jobs are repaired"))
    try:
        keys = list(app.storage.list(f"jobs/{job_id}"))
        findings.append(_finding("artifacts", True, f"{len(keys)} object(s) under jobs/{job_id}/"))
    except Exception as exc:
        findings.append(_finding("artifacts", False, f"storage check failed: {exc}", "run `conveyor doctor`"))
    context = {"events": evs, "outbox": box, "queue_held": held, "settings": app.settings.masked(), "app": app}
    for extra in app.plugins.call_each("conveyor_diagnose", job=job.as_dict(), context=context):
        findings.extend(extra)

    cause = (None if job.status.value in ("succeeded", "cancelled") else _plugin_cause(app, findings)) \
        or _cause(app, job, box, held, has_leader, alive, kind_known, now, queue_error)
    return {"job_id": job_id, "status": job.status.value, "attempt_id": job.attempt_id, "attempts": job.attempts,
            "max_attempts": job.max_attempts, "error_code": job.error_code, "last_error": job.last_error,
            "error_history": job.error_history, "events": evs, "outbox": box, "findings": findings,
            "cause_code": cause.code, "cause": cause.text, "evidence": list(cause.evidence),
            "next_step": cause.next_step}


#: ``diagnose``'s cause codes: what a program can act on (``cause_code`` of the report), with what each means
CAUSE_CODES: dict[str, str] = {
    "finished": "the job succeeded",
    "cancelled": "the job was cancelled",
    "failed_permanently": "the job failed and will not run again by itself",
    "poison_message": "every attempt lost its lease: the job kills or hangs its worker",
    "retrying": "the job failed an attempt and waits for its next one (retry backoff)",
    "scheduled": "the job waits for its run_at time",
    "queue_unreachable_outbox_pending": "the dispatcher cannot publish the job: the queue refuses it",
    "awaiting_dispatch": "the job waits in the outbox for a dispatcher",
    "stuck_no_consumer": "the job is in the queue and no live worker reads it",
    "kind_not_handled": "the job is in the queue and no plugin loaded here handles its kind",
    "queued_behind_others": "the job is in the queue behind other entries",
    "lost_queue_entry": "the job's queue entry is gone (trimmed, acknowledged or never delivered)",
    "healthy_running": "the job runs on a worker whose lease is live",
    "lease_expired_awaiting_reclaim": "the job's worker stopped renewing its lease; a peer reclaims it",
    "queue_unreachable": "the queue cannot be read to tell where the job is",
}


@dataclass(frozen=True)
class Cause:
    """``diagnose``'s verdict: a code from ``CAUSE_CODES`` (or a plugin's catalog), the sentence, the next step,
    and the evidence it rests on."""

    code: str
    text: str
    next_step: str
    evidence: tuple[str, ...] = ()


def _cause(app: Conveyor, job: Any, box: list[dict[str, Any]], held: bool | None, has_leader: bool,
           alive: dict[str, Any], kind_known: bool, now: datetime, queue_error: str | None) -> Cause:
    st = job.status.value
    status = f"status {st}"
    if st == "succeeded":
        return Cause("finished", "the job finished successfully", "nothing to do", (status,))
    if st == "cancelled":
        return Cause("cancelled", "the job was cancelled", "submit it again (or `conveyor jobs retry`) if it is "
                                                           "still wanted", (status,))
    if st == "failed":
        entry = app.plugins.catalog.get(job.error_code or "")
        lost = sum(1 for e in job.error_history if e.get("code") == "lease_lost")
        evidence = (status, f"error_code {job.error_code}", f"attempts {job.attempts} of {job.max_attempts}")
        if job.error_code == "lease_lost" and lost >= 2:
            return Cause("poison_message", f"every attempt ({lost}) lost its lease: the job most likely kills or "
                                           "hangs its worker (a poison job)",
                         "look at the worker's log and memory around the attempts' times; fix the input or the "
                         "handler, then `conveyor jobs retry`", (*evidence, f"{lost} lease_lost attempts"))
        meaning = f"{job.error_code}: {entry.meaning}" if entry else f"failed with {job.error_code}"
        why = "its attempts are spent" if job.attempts >= job.max_attempts else "the error is not retried"
        fix = entry.next_step if entry and not entry.retryable else "fix the cause"
        return Cause("failed_permanently", f"{meaning} ({job.last_error or ''}); {why}, so it will not run again "
                                           "by itself", f"{fix}; then `conveyor jobs retry` runs it again",
                     evidence)
    pending = [b for b in box if b["status"] == "pending"]
    if st == "queued":
        if job.next_attempt_at and job.next_attempt_at > now:
            if job.attempts > 0:
                return Cause("retrying", f"attempt {job.attempts} failed ({job.error_code}); the next one is due at "
                                         f"{job.next_attempt_at}", "wait; `conveyor jobs show` has each error",
                             (status, f"attempts {job.attempts} of {job.max_attempts}",
                              f"next_attempt_at {job.next_attempt_at}"))
            return Cause("scheduled", f"waiting until {job.next_attempt_at} (delayed start)", "wait",
                         (status, f"next_attempt_at {job.next_attempt_at}"))
        if pending and pending[-1]["last_error"]:
            return Cause("queue_unreachable_outbox_pending",
                         f"the dispatcher cannot publish to the queue: {pending[-1]['last_error']}",
                         "bring the queue back; the outbox delivers every pending row when it returns",
                         (status, f"outbox row pending after {pending[-1]['attempts']} attempt(s)",
                          f"last error: {pending[-1]['last_error']}"))
        if pending:
            return Cause("awaiting_dispatch", "waiting for a dispatcher to publish it",
                         "make sure `conveyor dispatcher` (or `run`) is running", (status, "outbox row pending"))
        if queue_error:
            return Cause("queue_unreachable", f"the queue cannot be read: {queue_error}",
                         "check CONVEYOR_QUEUE_URL and that the queue is up", (status, queue_error))
        if held:
            entry_id = box[-1]["stream_entry_id"] if box else "?"
            workers = [w for w in alive.values() if w["role"] == "worker"]
            if not workers:
                return Cause("stuck_no_consumer", "in the queue, but no live worker reads it",
                             "start `conveyor worker`", (status, f"entry {entry_id} held by the queue",
                                                         "no live worker"))
            if not kind_known:
                return Cause("kind_not_handled", "in the queue; no plugin here handles its kind",
                             "install the plugin on the workers", (status, f"kind {job.kind} not registered"))
            return Cause("queued_behind_others", "in the queue behind other entries",
                         "wait, or add workers (`conveyor queue pressure`)",
                         (status, f"entry {entry_id} held by the queue", f"{len(workers)} live worker(s)"))
        return Cause("lost_queue_entry", "lost from the queue (trimmed, acknowledged or never delivered)",
                     "the scheduler republishes it" if has_leader else "start `conveyor scheduler` to republish it",
                     (status, "outbox row dispatched", "entry no longer in the queue"))
    if st == "running":
        if job.lease_expires_at and job.lease_expires_at > now:
            where = "a live worker" if job.lease_owner in alive else "a worker not seen recently"
            return Cause("healthy_running", f"running on {job.lease_owner} ({where})",
                         "wait; `conveyor jobs cancel` stops it",
                         (status, f"lease live until {job.lease_expires_at}"))
        return Cause("lease_expired_awaiting_reclaim",
                     f"its worker {job.lease_owner} stopped renewing the lease (killed or stalled)",
                     "a peer reclaims it after lease + grace; the scheduler republishes it if the entry is gone",
                     (status, f"lease expired at {job.lease_expires_at}",
                      f"owner {'alive' if job.lease_owner in alive else 'not a live worker'}"))
    return Cause("queued_behind_others", st, "see the events", (status,))


def _plugin_cause(app: Conveyor, findings: list[dict[str, Any]]) -> Cause | None:
    """The first failed plugin finding that names a cause code of the error catalog (a plugin knows its kind best)."""
    for f in findings:
        code = f.get("cause_code")
        if f.get("ok") or not code:
            continue
        if code not in CAUSE_CODES and code not in app.plugins.catalog:
            log.warning("diagnose finding %r names cause code %r, which no catalog has; ignored", f.get("check"),
                        code)
            continue
        return Cause(str(code), f"{f.get('check')}: {f.get('detail')}", str(f.get("next_step") or "see findings"),
                     tuple(str(e) for e in f.get("evidence") or (f.get("detail"),)))
    return None


def _tenant_databases(app: Conveyor) -> dict[str, Any]:
    """Every registered tenant database reachable, with its tables."""
    t = app.tenancy
    assert t is not None
    try:
        keys = t.registered(refresh=True)
    except Exception as exc:
        return _finding("tenant databases", False, f"registry unreadable: {exc}", "run `conveyor db init`")
    bad = []
    for key in keys:
        try:
            missing = missing_tables(t.app_for(key, check=False).engine)
            if missing:
                bad.append(f"{key}: missing {', '.join(missing)}")
        except Exception as exc:
            bad.append(f"{key}: unreachable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    detail = f"{len(keys)} registered ({t.mode})" + (f"; {'; '.join(bad)}" if bad else ", all reachable and migrated")
    return _finding("tenant databases", not bad, detail,
                    "run `conveyor db init`, or `conveyor tenants add` for a database that is gone" if bad else None)


def _schema_check(app: Conveyor, control: bool) -> dict[str, Any]:
    """The tables are there: is their schema this release's?"""
    from conveyor.migrate import state
    try:
        states = state(app.engine, control=control, plugins=app.plugins.migrations())
    except SchemaTooNew as exc:
        return _finding("schema", False, str(exc))
    behind = [st for st in states if not st.up_to_date]
    at = ", ".join(f"{st.history} {st.current or '(none)'}" for st in states)
    if not behind:
        return _finding("schema", True, f"tables present, at this release's head ({at})")
    due = ", ".join(f"{r.history} {r.revision} ({r.title})" for st in behind for r in st.pending)
    return _finding("schema", False, f"at {at}; this release also needs {due}", "run `conveyor db upgrade`")


def _first_line(exc: BaseException) -> str:
    text_ = str(exc).strip()
    return f"{type(exc).__name__}: {text_.splitlines()[0]}" if text_ else type(exc).__name__


def _missing_sqlite_file(app: Conveyor) -> str | None:
    """The path of a SQLite database file that does not exist (connecting would create it)."""
    url = app.engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:" \
            or url.database.startswith("file:"):
        return None
    return None if os.path.exists(url.database) else url.database


def _storage_check(app: Conveyor) -> dict[str, Any]:
    """Storage reachable, read-only: a local folder that does not exist yet is fine (the first write makes it)."""
    url = app.settings.storage_url
    try:
        if "://" not in url or url.startswith("file://"):
            import fsspec
            root = fsspec.core.url_to_fs(url)[1]
            if not os.path.exists(root):
                return _finding("storage", True, f"{url}: not created yet (the first write creates it)")
            if not os.access(root, os.W_OK | os.X_OK):
                return _finding("storage", False, f"{url}: not writable by this user", "check CONVEYOR_STORAGE_URL")
            return _finding("storage", True, f"{url} writable")
        app.storage.exists(f"_doctor/{uuid.uuid4().hex}")
        return _finding("storage", True, f"{app.storage.base_url} reachable")
    except Exception as exc:
        return _finding("storage", False, f"{url}: {_first_line(exc)}", "check CONVEYOR_STORAGE_URL")


def doctor(app: Conveyor) -> list[dict[str, Any]]:
    """Check the deployment: database, tables, queue, storage, plugins, processes.

    Nothing is created: a SQLite file or a storage folder that does not exist is reported,
    not made. Each failed check is one line; what needs the tables is skipped without them.
    """
    checks: list[dict[str, Any]] = []
    ready = False
    absent = _missing_sqlite_file(app)
    if absent is not None:
        checks.append(_finding("database", False, f"sqlite file {absent} does not exist",
                               "run `conveyor db init` here, or set CONVEYOR_DB_URL to the deployment's database"))
    else:
        try:
            t0 = time.perf_counter()
            with app.engine.connect() as conn:
                conn.execute(text("select 1"))
            checks.append(_finding("database", True, f"{app.engine.dialect.name} reachable "
                                   f"({(time.perf_counter() - t0) * 1000:.1f} ms)"))
            control = app.tenancy is not None
            missing = missing_tables(app.engine, control=control, upgrades=False)
            if missing:
                checks.append(_finding("tables", False, f"missing {', '.join(missing)}: run `conveyor db init`"))
            else:
                checks.append(_schema_check(app, control))
            ready = not missing
        except Exception as exc:
            checks.append(_finding("database", False, f"unreachable: {_first_line(exc)}", "check CONVEYOR_DB_URL"))
    if ready and app.tenancy is not None:
        checks.append(_tenant_databases(app))
    if not ready and app.queue.transactional:
        checks.append(_finding("queue", False, f"{app.settings.queue_url}: lives in the database, which has no "
                                               "Conveyor tables yet", "run `conveyor db init`"))
    else:
        try:
            app.queue.ensure_group()
            p = app.queue.pressure()
            checks.append(_finding("queue", True, f"{app.settings.queue_url}: length {p.length}, "
                                                  f"pending {p.pending}"))
        except Exception as exc:
            checks.append(_finding("queue", False, f"{app.settings.queue_url}: {_first_line(exc)}",
                                   "check CONVEYOR_QUEUE_URL"))
    checks.append(_storage_check(app))
    host = app.plugins
    host.load_all()
    failed = [i for i in host.list() if i.error]
    checks.append(_finding("plugins", not failed, f"{len(host.list()) - len(failed)} loaded"
                           + (f"; failed: {'; '.join(f'{i.name}: {i.error}' for i in failed)}" if failed else "")))
    for extra in host.call_each("conveyor_doctor", app=app):
        checks.extend(extra)
    if not ready:
        checks.append(_finding("processes", False, "not known: the database has no Conveyor tables yet",
                               "run `conveyor db init`"))
        return checks
    try:
        procs = [w for w in list_workers(app.engine) if w["alive"]]
        roles = {r: sum(1 for w in procs if w["role"] == r) for r in ("worker", "dispatcher", "scheduler")}
        checks.append(_finding("processes", True, ", ".join(f"{n} {r}(s)" for r, n in roles.items())))
    except Exception as exc:
        checks.append(_finding("processes", False, _first_line(exc)))
    return checks
