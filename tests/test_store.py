"""Submit, idempotency, transactions shared with the host application, the state machine."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from conveyor import store
from conveyor.db import utcnow
from conveyor.errors import IllegalTransition, JobNotFound
from conveyor.models import JobStatus, check_transition
from conveyor.schema import events, jobs, outbox


def counts(app):
    with app.engine.connect() as c:
        return tuple(c.execute(select(func.count()).select_from(t)).scalar() for t in (jobs, outbox, events))


def test_submit_writes_job_outbox_and_event_together(app):
    job_id = app.submit("conveyor.echo", {"a": 1}, tenant="t1", org="o1", priority=3, file_id="f1")
    job = app.get(job_id)
    assert (job.status, job.tenant_id, job.org_id, job.priority, job.file_id) == \
        (JobStatus.QUEUED, "t1", "o1", 3, "f1")
    assert job.attempt_id == 0 and job.attempts == 0 and job.max_attempts == 3
    assert counts(app) == (1, 1, 1)
    with app.engine.connect() as c:
        row = c.execute(select(outbox)).mappings().one()
    assert row["status"] == "pending" and row["message"]["job_id"] == job_id
    assert set(row["message"]["fields"]) >= {"job_id", "enqueue_ts", "attempt_hint", "priority", "tenant_id",
                                             "org_id", "trace_id"}


def test_submit_joins_the_host_transaction(app):
    with app.engine.connect() as conn:
        with conn.begin() as tx:
            app.submit("conveyor.echo", {"rolled": "back"}, conn=conn)
            tx.rollback()
    assert counts(app) == (0, 0, 0)
    with app.engine.connect() as conn:
        with conn.begin():
            job_id = app.submit("conveyor.echo", {"kept": True}, conn=conn)
    assert app.get(job_id).payload == {"kept": True}


def test_idempotency_key_returns_the_existing_job_per_tenant(app):
    a = app.submit("conveyor.echo", {"n": 1}, idempotency_key="k1", tenant="t1")
    b = app.submit("conveyor.echo", {"n": 2}, idempotency_key="k1", tenant="t1")
    c = app.submit("conveyor.echo", {"n": 3}, idempotency_key="k1", tenant="t2")
    assert a == b != c
    assert app.get(a).payload == {"n": 1}
    assert counts(app)[0] == 2


def test_idempotency_key_is_reusable_after_its_job_is_final_past_the_ttl(app):
    a = app.submit("conveyor.echo", idempotency_key="k2")
    with app.engine.begin() as c:
        c.execute(update(jobs).where(jobs.c.id == a).values(status="succeeded",
                                                            finished_at=utcnow() - timedelta(days=2)))
    b = app.submit("conveyor.echo", idempotency_key="k2")
    assert b != a
    assert app.get(a).idempotency_key is None and app.get(b).idempotency_key == "k2"
    # still within the TTL: the same key returns the new job
    assert app.submit("conveyor.echo", idempotency_key="k2") == b


def test_invalid_payload_is_rejected_and_nothing_is_written(app):
    with pytest.raises(store.InvalidPayload, match="not plain JSON"):
        app.submit("conveyor.echo", {"x": float("nan")})
    with pytest.raises(store.InvalidPayload):
        app.submit("conveyor.echo", {"x": object()})
    assert counts(app) == (0, 0, 0)


def test_submit_many_is_one_transaction(app):
    ids = app.submit_many([store.JobSpec("conveyor.echo", {"i": i}) for i in range(100)])
    assert len(set(ids)) == 100 and counts(app) == (100, 100, 100)


def test_submit_many_keeps_order_fields_and_delays(app):
    later = utcnow() + timedelta(hours=1)
    specs = [store.JobSpec("conveyor.echo", {"i": 0}, tenant="t1", org="o1", priority=5, file_id="f1",
                           max_attempts=7, trace_id="tr-0"),
             store.JobSpec("conveyor.echo", None),
             store.JobSpec("conveyor.echo", {"i": 2, "s": "é\n\"x\""}, run_at=later)]
    ids = app.submit_many(specs)
    a, b, c = (app.get(i) for i in ids)
    assert (a.tenant_id, a.org_id, a.priority, a.file_id, a.max_attempts, a.trace_id) == \
        ("t1", "o1", 5, "f1", 7, "tr-0")
    assert (b.payload, b.tenant_id, b.org_id, b.max_attempts, b.next_attempt_at) == (None, "default", None, 3, None)
    assert b.trace_id and b.error_history == []
    assert c.payload == {"i": 2, "s": "é\n\"x\""} and c.next_attempt_at == later
    with app.engine.connect() as conn:
        box = conn.execute(select(outbox).order_by(outbox.c.id)).mappings().all()
        ev = {r.job_id: r for r in conn.execute(select(events))}
    assert [r["job_id"] for r in box] == ids  # the outbox publishes in submit order
    assert box[0]["message"]["priority"] == 5 and box[0]["message"]["fields"]["trace_id"] == "tr-0"
    assert box[0]["next_attempt_at"] == box[0]["created_at"] and box[2]["next_attempt_at"] == later
    assert ev[ids[0]].file_id == "f1" and ev[ids[0]].action == "submitted"
    assert ev[ids[0]].payload == {"kind": "conveyor.echo"}
    assert ev[ids[2]].payload == {"kind": "conveyor.echo", "run_at": later.isoformat()}


def test_state_machine_rejects_illegal_transitions(app):
    for cur, tgt in [("succeeded", "running"), ("failed", "queued"), ("cancelled", "running"),
                     ("queued", "succeeded"), ("queued", "queued")]:
        with pytest.raises(IllegalTransition):
            check_transition("j", cur, tgt)
    check_transition("j", "running", "queued")
    job_id = app.submit("conveyor.echo")
    app.cancel(job_id)
    with pytest.raises(IllegalTransition, match="cannot go from 'cancelled' to 'cancelled'"):
        app.cancel(job_id)
    with pytest.raises(IllegalTransition):
        store.transition(app.engine, job_id, JobStatus.RUNNING)
    assert app.get(job_id).status == JobStatus.CANCELLED


def test_other_tenants_jobs_look_absent(app):
    job_id = app.submit("conveyor.echo", tenant="acme")
    with pytest.raises(JobNotFound):
        app.get(job_id, tenant="other")
    with pytest.raises(JobNotFound):
        app.cancel(job_id, tenant="other")
    assert app.get(job_id, tenant="acme").status == JobStatus.QUEUED


def test_claim_counts_attempts_and_poison_job_fails_after_max_attempts(app):
    """Attempts grow at claim time; a job whose every attempt dies ends failed (lease_lost)."""
    job_id = app.submit("conveyor.echo", max_attempts=2)
    (c1,), _, _ = store.claim(app.engine, [("e", job_id)], "w1", lease_s=0.05)
    assert c1.job.attempts == 1
    import time
    time.sleep(0.1)
    (c2,), _, _ = store.claim(app.engine, [("e", job_id)], "w2", lease_s=0.05)
    assert c2.reclaimed and c2.job.attempts == 2
    time.sleep(0.1)
    got, skip, _ = store.claim(app.engine, [("e", job_id)], "w3", lease_s=0.05)
    assert got == [] and skip == ["e"]
    job = app.get(job_id)
    assert job.status == JobStatus.FAILED and job.error_code == "lease_lost"
    assert [e["code"] for e in job.error_history] == ["lease_lost", "lease_lost"]


def test_live_attempt_lets_only_the_current_attempt_write(app):
    """A plugin's own rows: the reclaimed attempt's writer gets None, the live one the locked transaction."""
    import time
    job_id = app.submit("conveyor.echo", max_attempts=3)
    (first,), _, _ = store.claim(app.engine, [("e", job_id)], "w1", lease_s=0.05)
    with store.live_attempt(app.engine, job_id, first.job.attempt_id) as live:
        assert live is not None and (live.attempts, live.max_attempts) == (1, 3)
        assert live.conn.execute(select(jobs.c.lease_owner).where(jobs.c.id == job_id)).scalar() == "w1"
    time.sleep(0.1)
    (second,), _, _ = store.claim(app.engine, [("e", job_id)], "w2", lease_s=30)
    assert second.job.attempt_id > first.job.attempt_id
    with store.live_attempt(app.engine, job_id, first.job.attempt_id) as stale:
        assert stale is None  # the zombie of attempt 1 writes nothing
    with store.live_attempt(app.engine, job_id, second.job.attempt_id) as live:
        assert live is not None and live.attempts == 2
    app.cancel(job_id)
    with store.live_attempt(app.engine, job_id, second.job.attempt_id) as after:
        assert after is None
    with store.live_attempt(app.engine, job_id, second.job.attempt_id, ("running", "cancelled")) as cancelled:
        assert cancelled is not None  # a cancelled attempt may still record why it stopped
    with store.live_attempt(app.engine, "no-such-job", 1) as missing:
        assert missing is None
