"""Repair (lost jobs come back), leader election, and GC (dry run by default)."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import func, select, update

from conveyor import lease, store
from conveyor.db import utcnow
from conveyor.outbox import Dispatcher, run_until_empty
from conveyor.scheduler import LEADER_LEASE, Scheduler
from conveyor.schema import events, jobs, outbox


def age_outbox(app, seconds):
    """Pretend every outbox row was written `seconds` ago (repair waits one lease period)."""
    with app.engine.begin() as c:
        c.execute(update(outbox).values(created_at=utcnow() - timedelta(seconds=seconds)))


def test_queued_job_lost_from_the_queue_is_republished_once_per_lease(app, pipeline):
    job_id = app.submit("conveyor.echo", {"lost": True})
    run_until_empty(Dispatcher(app.store, app.queue))
    entries = app.queue.read("someone", 10)
    app.queue.ack([e.entry_id for e in entries])  # acked away without the job running
    sched = Scheduler(app)
    assert sched.repair().republished == []  # within one lease period: leave it alone
    age_outbox(app, 10)
    assert sched.repair().republished == [job_id]
    assert sched.repair().republished == []  # the new outbox row is pending: no second copy
    with pipeline() as p:
        (job,) = p.wait([job_id])
    assert job.status.value == "succeeded"
    assert "republished" in [e["action"] for e in app.events(job_id)]


def test_trimmed_queue_entries_are_repaired(app, pipeline):
    ids = app.submit_many([store.JobSpec("conveyor.echo", {"i": i}) for i in range(10)])
    run_until_empty(Dispatcher(app.store, app.queue))
    assert app.queue.trim(0) >= 1 or app.queue.pressure().length == 0
    age_outbox(app, 10)
    rep = Scheduler(app).repair()
    assert sorted(rep.republished) == sorted(ids)
    with pipeline() as p:
        done = p.wait(ids)
    assert all(j.status.value == "succeeded" for j in done)


def test_running_job_with_expired_lease_and_no_entry_is_republished_and_reclaimed(app, pipeline):
    """A finalize that lost its lease must not leave the row running forever."""
    job_id = app.submit("conveyor.echo", {"v": 2})
    run_until_empty(Dispatcher(app.store, app.queue))
    entries = app.queue.read("dead-worker", 1)
    store.claim(app.engine, [(entries[0].entry_id, job_id)], "dead-worker", lease_s=0.1)
    app.queue.ack([entries[0].entry_id])
    time.sleep(0.2)
    age_outbox(app, 10)
    assert Scheduler(app).repair().republished == [job_id]
    with pipeline() as p:
        (job,) = p.wait([job_id])
    assert job.status.value == "succeeded" and job.attempt_id == 2
    assert "reclaimed" in [e["action"] for e in app.events(job_id)]


def test_job_still_held_by_the_queue_is_left_to_the_workers(app):
    job_id = app.submit("conveyor.echo")
    run_until_empty(Dispatcher(app.store, app.queue))
    age_outbox(app, 10)
    assert Scheduler(app).repair().republished == []
    assert app.get(job_id).status.value == "queued"


def test_exhausted_running_job_is_failed_by_repair(app):
    job_id = app.submit("conveyor.echo", max_attempts=1)
    run_until_empty(Dispatcher(app.store, app.queue))
    e = app.queue.read("dead", 1)[0]
    store.claim(app.engine, [(e.entry_id, job_id)], "dead", lease_s=0.05)
    app.queue.ack([e.entry_id])
    time.sleep(0.1)
    age_outbox(app, 10)
    rep = Scheduler(app).repair()
    assert rep.failed_exhausted == [job_id]
    job = app.get(job_id)
    assert job.status.value == "failed" and job.error_code == "lease_lost"


def test_only_one_scheduler_leads_and_a_dead_leader_is_replaced(app):
    a = Scheduler(app, name="sched-a")
    b = Scheduler(app, name="sched-b")
    a.lease_ttl_s = b.lease_ttl_s = 0.5
    assert a.is_leader() and not b.is_leader()
    assert a.is_leader()  # renewal
    assert b.run_once() == {"leader": False, "holder": "sched-a"}
    time.sleep(0.6)  # a stops renewing (as if killed)
    assert b.is_leader() and not a.is_leader()
    assert lease.current(app.engine, LEADER_LEASE)["holder"] == "sched-b"


def test_gc_is_a_dry_run_unless_applied(app, pipeline):
    ids = app.submit_many([store.JobSpec("test.artifact") for _ in range(3)])
    keep = app.submit("conveyor.echo", run_at=utcnow() + timedelta(days=1))
    with pipeline() as p:
        p.wait(ids)
    with app.engine.begin() as c:
        c.execute(update(jobs).where(jobs.c.id.in_(ids)).values(finished_at=utcnow() - timedelta(days=40)))
    sched = Scheduler(app)
    plan = sched.gc()
    assert not plan.applied and plan.jobs == 3 and plan.events >= 12
    with app.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(jobs)).scalar() == 4
    assert app.storage.exists(f"jobs/{ids[0]}/1/out.txt")
    plan = sched.gc(apply=True)
    assert plan.applied and plan.jobs == 3
    with app.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(jobs)).scalar() == 1
        assert c.execute(select(func.count()).where(events.c.job_id.in_(ids))).scalar() == 0
    assert not app.storage.exists(f"jobs/{ids[0]}/1/out.txt")
    assert app.get(keep).status.value == "queued"
