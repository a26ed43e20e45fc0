"""The scheduler: one leader at a time runs the repair loop and the GC loop.

Repair finds every job the queue no longer holds but the database says must run
(queued, or running under an expired lease) and republishes it through the
outbox, at most once per lease period. GC trims the queue and plans (or, with
``apply``, performs) deletion of finished jobs past their retention.

In a database-per-tenant deployment the leader lease lives in the control database and
each round repairs every registered tenant database in turn (GC too); a tenant database
that fails is logged and skipped until the next round.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, exists, func, insert, or_, select

from conveyor import lease, presence
from conveyor.db import utcnow
from conveyor.metrics import get_metrics
from conveyor.models import FINAL, EventAction, Job, JobStatus
from conveyor.schema import events, jobs, outbox
from conveyor.store import logline

if TYPE_CHECKING:
    from conveyor.app import Conveyor

log = logging.getLogger("conveyor.scheduler")

LEADER_LEASE = "scheduler-leader"


@dataclass
class RepairReport:
    """What one repair round found and did."""

    republished: list[str] = field(default_factory=list)
    failed_exhausted: list[str] = field(default_factory=list)
    checked: int = 0
    tenants: int = 0  # tenant databases repaired (database-per-tenant)
    tenant_errors: dict[str, str] = field(default_factory=dict)


@dataclass
class GcPlan:
    """What GC would delete (dry run) or deleted (apply)."""

    applied: bool
    retention_days: float
    jobs: int = 0
    events: int = 0
    outbox_rows: int = 0
    artifact_prefixes: int = 0
    trimmed_entries: int = 0
    owned_objects: int = 0  # storage keys plugins named for the deleted jobs (conveyor_gc_keys), when applied
    sample_job_ids: list[str] = field(default_factory=list)
    tenant_errors: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        out = dict(self.__dict__)
        if not out["tenant_errors"]:
            del out["tenant_errors"]
        return out


class Scheduler:
    """Leader-elected repair and GC loops."""

    def __init__(self, app: Conveyor, *, name: str | None = None, interval_s: float | None = None,
                 gc_apply: bool = False, gc_every: int = 30, batch: int = 500) -> None:
        self.app = app
        s = app.settings
        self.name = name or f"{s.consumer_name}-scheduler"
        self.interval_s = interval_s or s.repair_interval_seconds
        self.lease_ttl_s = max(s.lease_seconds, 2 * self.interval_s)
        self.gc_apply = gc_apply
        self.gc_every = gc_every
        self.batch = batch
        self.token: int | None = None
        self._stop = threading.Event()
        self._history_minute: Any = None

    def is_leader(self) -> bool:
        """Take or renew the leader lease; True while this scheduler holds it."""
        tok = lease.acquire(self.app.engine, LEADER_LEASE, self.name, self.lease_ttl_s)
        if tok is not None and self.token is None:
            log.info("scheduler %s is leader (token %s)", self.name, tok)
        elif tok is None and self.token is not None:
            log.warning("scheduler %s lost leadership", self.name)
        self.token = tok
        return tok is not None

    # ------------------------------------------------------------ repair

    def _databases(self) -> list[tuple[str, Conveyor]]:
        """``(label, app)`` of every database holding jobs: the one, or each registered tenant's."""
        t = self.app.tenancy
        if t is None:
            return [("", self.app)]
        return [(str(key), app) for key, app in t.apps()]

    def repair_all(self) -> RepairReport:
        """``repair`` of every database holding jobs; a tenant database that fails is skipped this round."""
        if self.app.tenancy is None:
            return self.repair()
        total = RepairReport()
        for label, app in self._databases():
            try:
                rep = self.repair(app)
            except Exception as exc:
                log.error("repair of tenant %s failed: %s", label, exc)
                total.tenant_errors[label] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                continue
            total.tenants += 1
            total.checked += rep.checked
            total.republished += rep.republished
            total.failed_exhausted += rep.failed_exhausted
        return total

    def repair(self, app: Conveyor | None = None) -> RepairReport:
        """Republish jobs that must run but that no queue entry holds any more (in ``app``'s database)."""
        app = app or self.app
        engine, q, s = app.engine, app.queue, app.settings
        now = utcnow()
        quiet = now - timedelta(seconds=s.lease_seconds)
        report = RepairReport()
        pending_box = exists().where(outbox.c.job_id == jobs.c.id, outbox.c.status == "pending")
        recent_box = exists().where(outbox.c.job_id == jobs.c.id, outbox.c.created_at > quiet)
        stmt = (select(jobs).where(
            or_(and_(jobs.c.status == JobStatus.QUEUED.value,
                     or_(jobs.c.next_attempt_at.is_(None), jobs.c.next_attempt_at <= now)),
                and_(jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_expires_at < now)),
            ~pending_box, ~recent_box).order_by(jobs.c.created_at).limit(self.batch))
        with engine.connect() as conn:
            candidates = [Job.from_row(r) for r in conn.execute(stmt).mappings()]
            if not candidates:
                return report
            latest = {}
            for r in conn.execute(select(outbox.c.job_id, outbox.c.stream_entry_id, outbox.c.id)
                                  .where(outbox.c.job_id.in_([j.id for j in candidates]))
                                  .order_by(outbox.c.id)):
                latest[r.job_id] = r.stream_entry_id
        report.checked = len(candidates)
        entry_ids = [e for e in latest.values() if e]
        held = q.held(entry_ids) if entry_ids else set()
        committed: list[dict[str, Any]] = []
        with engine.begin() as conn:
            for job in candidates:
                if latest.get(job.id) in held:
                    continue  # still in the queue: a worker (or the reclaim loop) will take it
                if job.status == JobStatus.RUNNING and job.attempts >= job.max_attempts:
                    ev = app.store.fail_exhausted(conn, job, now, by="scheduler")
                    if ev:
                        conn.execute(insert(events), ev)
                        committed.extend(ev)
                        report.failed_exhausted.append(job.id)
                    continue
                committed += app.store.republish(conn, job, now, EventAction.REPUBLISHED,
                                                 attempt_id=job.attempt_id, attempt_hint=job.attempts + 1,
                                                 status=job.status.value, lost_entry=latest.get(job.id))
                report.republished.append(job.id)
        app.store.observers.publish(committed)
        for j in report.republished:
            logline("republished", job_id=j)
        if report.republished:
            app.store.pending.notify()
        return report

    # ------------------------------------------------------------ gc

    def gc(self, apply: bool | None = None, retention_days: float | None = None) -> GcPlan:
        """Trim the queue and plan (or perform) deletion of old finished jobs (of every tenant database)."""
        apply = self.gc_apply if apply is None else apply
        s = self.app.settings
        days = s.gc_retention_days if retention_days is None else retention_days
        plan = GcPlan(applied=apply, retention_days=days)
        cutoff = utcnow() - timedelta(days=days)
        if apply:
            plan.trimmed_entries = self.app.queue.trim(s.stream_maxlen)
        for label, app in self._databases():
            try:
                self._gc_database(app, plan, apply, cutoff)
            except Exception as exc:
                if self.app.tenancy is None:
                    raise
                log.error("gc of tenant %s failed: %s", label, exc)
                plan.tenant_errors[label] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        plan.artifact_prefixes = plan.jobs
        m = get_metrics()
        if m is not None and apply:
            m.scheduler_actions.labels("gc_jobs_deleted").inc(plan.jobs)
            m.scheduler_actions.labels("queue_entries_trimmed").inc(plan.trimmed_entries)
        return plan

    def _gc_database(self, app: Conveyor, plan: GcPlan, apply: bool, cutoff: Any) -> None:
        finals = [st.value for st in FINAL]
        old = select(jobs.c.id).where(jobs.c.status.in_(finals), jobs.c.finished_at < cutoff)
        engine = app.engine
        with engine.connect() as conn:
            plan.jobs += int(conn.execute(select(func.count()).select_from(old.subquery())).scalar() or 0)
            plan.events += int(conn.execute(select(func.count()).where(events.c.job_id.in_(old))).scalar() or 0)
            plan.outbox_rows += int(conn.execute(select(func.count()).where(outbox.c.job_id.in_(old))).scalar()
                                    or 0)
            if len(plan.sample_job_ids) < 10:
                plan.sample_job_ids += list(conn.execute(old.limit(10 - len(plan.sample_job_ids))).scalars())
        if apply:
            doomed = select(jobs.c.id, jobs.c.kind, jobs.c.tenant_id, jobs.c.payload).where(jobs.c.id.in_(old))
            while True:
                with engine.begin() as conn:
                    rows = [dict(r) for r in conn.execute(doomed.limit(self.batch)).mappings()]
                    ids = [r["id"] for r in rows]
                    if not ids:
                        break
                    conn.execute(delete(events).where(events.c.job_id.in_(ids)))
                    conn.execute(delete(outbox).where(outbox.c.job_id.in_(ids)))
                    conn.execute(delete(jobs).where(jobs.c.id.in_(ids)))
                for row in rows:
                    keys = [f"jobs/{row['id']}"]
                    for owned in app.plugins.call_each("conveyor_gc_keys", job=row):
                        keys += [str(k) for k in owned]
                    for key in keys:
                        try:
                            app.storage.delete(key, recursive=True)
                        except FileNotFoundError:
                            pass
                        except Exception as exc:
                            log.warning("gc could not delete %s of job %s: %s", key, row["id"], exc)
                    plan.owned_objects += len(keys) - 1

    # ------------------------------------------------------------ loop

    def run_once(self) -> dict[str, Any]:
        """One round if leader: repair (and GC planning); returns a report."""
        if not self.is_leader():
            holder = lease.current(self.app.engine, LEADER_LEASE)
            return {"leader": False, "holder": holder["holder"] if holder else None}
        m = get_metrics()
        if m is not None:
            self._measure(m)  # before the repair, which fails while the queue is down: that is when they matter
        rep = self.repair_all()
        if m is not None:
            m.scheduler_actions.labels("republished").inc(len(rep.republished))
            m.scheduler_actions.labels("failed_exhausted").inc(len(rep.failed_exhausted))
            m.scheduler_actions.labels("rounds").inc()
        self._history()
        out: dict[str, Any] = {"leader": True, "token": self.token, "republished": len(rep.republished),
                               "failed_exhausted": len(rep.failed_exhausted), "checked": rep.checked}
        if self.app.tenancy is not None:
            out["tenants"] = rep.tenants
            out["tenant_errors"] = rep.tenant_errors
        return out

    def _history(self) -> None:
        """Roll up the dashboard's history (``conveyor.history``) once a minute, in every database holding jobs."""
        from conveyor import history
        minute = utcnow().replace(second=0, microsecond=0)
        if minute == self._history_minute:
            return
        self._history_minute = minute
        for label, app in self._databases():
            try:
                history.roll_up(app)
            except Exception as exc:  # the history is a picture: a gap, never a failed round
                log.warning("history of %s not rolled up: %s", label or "the database", exc)

    def _measure(self, m: Any) -> None:
        """Set the gauges, each from its own source, so one that is down leaves the others current."""
        try:
            m.outbox_pending.set(sum(app.store.count_pending_outbox() for _label, app in self._databases()))
        except Exception as exc:
            log.warning("outbox gauge not measured: %s", exc)
        try:
            p = self.app.queue.pressure()
            m.queue.labels("length").set(p.length)
            m.queue.labels("pending").set(p.pending)
        except Exception as exc:
            log.warning("queue gauges not measured: %s", exc)

    def stop(self) -> None:
        """End the loop after the current round."""
        self._stop.set()

    def run(self) -> None:
        """Loop: repair every interval while leader; GC every ``gc_every`` rounds."""
        presence.register(self.app.engine, self.name, "scheduler")
        rounds = 0
        try:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    report = self.run_once()
                    if report.get("leader"):
                        rounds += 1
                        if rounds % self.gc_every == 0:
                            plan = self.gc()
                            log.info("gc %s", plan.as_dict())
                    presence.beat(self.app.engine, self.name, 0, True)
                except Exception as exc:
                    log.error("scheduler round failed: %s", exc)
                self._stop.wait(max(0.05, self.interval_s - (time.monotonic() - t0)))
        finally:
            if self.token is not None:
                try:
                    lease.release(self.app.engine, LEADER_LEASE, self.name)
                except Exception:
                    pass
            try:
                presence.stopped(self.app.engine, self.name)
            except Exception:
                pass
