"""Jobs through dispatcher, queue and worker in one process: results, retries, timeouts, cancels."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from conveyor import store
from conveyor.db import utcnow
from conveyor.store import JobSpec

from pipeline_support import wait_for


def actions(app, job_id):
    return [e["action"] for e in app.events(job_id)]


def test_echo_jobs_succeed_once_with_their_payload(app, pipeline):
    ids = app.submit_many([JobSpec("conveyor.echo", {"i": i}) for i in range(50)])
    with pipeline() as p:
        done = p.wait(ids)
    assert [j.status.value for j in done] == ["succeeded"] * 50
    assert [j.result for j in done] == [{"i": i} for i in range(50)]
    for j in done:
        assert j.attempt_id == 1 and j.attempts == 1
        assert actions(app, j.id) == ["submitted", "dispatched", "claimed", "succeeded"]


def test_retryable_failure_retries_with_backoff_then_fails_with_history(app, pipeline):
    job_id = app.submit("conveyor.fail", {"code": "connector_failed", "message": "down"}, max_attempts=3)
    with pipeline() as p:
        (job,) = p.wait([job_id])
    assert job.status.value == "failed" and job.error_code == "connector_failed"
    assert job.attempts == 3 and job.attempt_id == 3
    assert [e["attempt"] for e in job.error_history] == [1, 2, 3]
    assert all(e["code"] == "connector_failed" for e in job.error_history)
    evs = app.events(job_id)
    retries = [e for e in evs if e["action"] == "retry_scheduled"]
    assert len(retries) == 2 and all(e["payload"]["delay_s"] > 0 for e in retries)
    assert evs[-1]["action"] == "job_failed"


def test_non_retryable_failure_fails_at_once(app, pipeline):
    job_id = app.submit("conveyor.fail", {"code": "invalid_payload"}, max_attempts=5)
    with pipeline() as p:
        (job,) = p.wait([job_id])
    assert job.status.value == "failed" and job.attempts == 1 and job.error_code == "invalid_payload"
    assert len(job.error_history) == 1


def test_flaky_job_succeeds_on_a_later_attempt(app, pipeline):
    job_id = app.submit("test.flaky", {"succeed_on": 2})
    with pipeline() as p:
        (job,) = p.wait([job_id])
    assert job.status.value == "succeeded" and job.result == {"attempt": 2}
    assert [e["code"] for e in job.error_history] == ["connector_failed"]


def test_unexpected_exception_is_internal_error_with_traceback(app, pipeline):
    job_id = app.submit("test.boom")
    with pipeline() as p:
        (job,) = p.wait([job_id])
    assert job.status.value == "failed" and job.error_code == "internal_error" and job.attempts == 2
    assert "RuntimeError: unexpected" in job.last_error and "Traceback" in job.last_error


def test_unknown_kind_fails_with_handler_not_found(app, pipeline):
    job_id = app.submit("nobody.has.this")
    with pipeline() as p:
        (job,) = p.wait([job_id])
    assert job.status.value == "failed" and job.error_code == "handler_not_found" and job.attempts == 1


def test_timeout_stops_a_cooperative_handler(app, pipeline):
    job_id = app.submit("test.timeout", {"seconds": 30})
    t0 = time.monotonic()
    with pipeline() as p:
        (job,) = p.wait([job_id], timeout=30)
    assert time.monotonic() - t0 < 20
    assert job.status.value == "failed" and job.error_code == "timeout" and job.attempts == 2


def test_handler_ignoring_its_timeout_is_finalized_without_it(app, pipeline):
    job_id = app.submit("test.ignore_timeout", {"seconds": 8})
    with pipeline() as p:
        (job,) = p.wait([job_id], timeout=30)
        assert job.status.value == "failed" and job.error_code == "timeout"
        assert p.worker.stats.abandoned == 1


def test_cancel_stops_a_running_handler(app, pipeline):
    job_id = app.submit("conveyor.sleep", {"seconds": 60})
    with pipeline() as p:
        p.wait([job_id], statuses=("running",))
        t0 = time.monotonic()
        app.cancel(job_id, reason="test")
        deadline = time.monotonic() + 10
        while p.worker.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.worker.in_flight == 0, "handler did not stop"
        assert time.monotonic() - t0 < 5
    job = app.get(job_id)
    assert job.status.value == "cancelled" and job.result is None
    assert "cancelled" in actions(app, job_id)


def test_artifacts_are_written_under_the_attempt_prefix(app, pipeline):
    job_id = app.submit("test.artifact")
    with pipeline() as p:
        (job,) = p.wait([job_id])
    assert job.result == {"key": f"jobs/{job_id}/1/out.txt"}
    assert app.storage.get(job.result["key"]) == b"attempt 1"


def test_delayed_job_does_not_run_before_it_is_due(app, pipeline):
    job_id = app.submit("conveyor.echo", {"x": 1}, run_at=utcnow() + timedelta(seconds=1.5))
    with pipeline() as p:
        time.sleep(0.8)
        assert app.get(job_id).status.value == "queued"
        (job,) = p.wait([job_id], timeout=20)
    assert job.status.value == "succeeded"
    assert job.started_at >= job.created_at + timedelta(seconds=1.4)


def test_worker_never_takes_more_than_its_free_slots(app):
    """Two workers with 2 slots each share 4 long jobs 2 and 2: neither prefetches its peer's share."""
    from conveyor.outbox import Dispatcher, run_until_empty
    from conveyor.worker import Worker

    ids = app.submit_many([JobSpec("conveyor.sleep", {"seconds": 1.5}) for _ in range(4)])
    run_until_empty(Dispatcher(app.store, app.queue))
    workers = [Worker(app, concurrency=2, name=f"w{i}", block_ms=100) for i in range(2)]
    threads = [threading.Thread(target=w.run, kwargs={"install_signals": False}) for w in workers]
    threads[0].start()
    time.sleep(0.5)  # the first worker has seen all four entries by now
    threads[1].start()
    try:
        wait_for(app, ids, timeout=30)
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(30)
    assert [w.stats.claimed for w in workers] == [2, 2]


def test_higher_priority_runs_first(app, pipeline):
    low = app.submit_many([JobSpec("conveyor.echo", {"p": 0}) for _ in range(20)])
    high = app.submit("conveyor.echo", {"p": 9}, priority=9)
    with pipeline(concurrency=1) as p:
        p.wait(low + [high])
    started = {j: app.get(j).started_at for j in low + [high]}
    assert started[high] <= sorted(started.values())[1]


def test_fencing_a_stale_attempt_cannot_finalize(app):
    """Worker A's lease expires, B reclaims; A's late result is discarded and recorded, B's stands."""
    job_id = app.submit("conveyor.echo", {"v": 1})
    a, _, _ = store.claim(app.engine, [("e1", job_id)], "worker-a", lease_s=0.2)
    assert a and a[0].job.attempt_id == 1
    time.sleep(0.4)
    b, _, _ = store.claim(app.engine, [("e2", job_id)], "worker-b", lease_s=30)
    assert b and b[0].reclaimed and b[0].job.attempt_id == 2
    done_a, _ = store.finalize(app.engine, [store.Outcome(job_id, 1, "e1", ok=True, result={"from": "a"})])
    assert done_a[0].action == "stale_result"
    done_b, _ = store.finalize(app.engine, [store.Outcome(job_id, 2, "e2", ok=True, result={"from": "b"})])
    assert done_b[0].action == "succeeded"
    job = app.get(job_id)
    assert job.status.value == "succeeded" and job.result == {"from": "b"} and job.attempt_id == 2
    acts = actions(app, job_id)
    assert "reclaimed" in acts and "stale_result" in acts
    stale = next(e for e in app.events(job_id) if e["action"] == "stale_result")
    assert stale["attempt_id"] == 1 and stale["payload"]["current_attempt"] == 2


def test_claim_and_finalize_commits_fenced_successes_and_new_claims_together(app):
    """The worker's one-statement cycle on PostgreSQL keeps the rules of finalize and claim."""
    done_id, stale_id, failed_id, fresh_id = app.submit_many([JobSpec("conveyor.echo") for _ in range(4)])
    store.claim(app.engine, [("e1", done_id), ("e2", stale_id), ("e3", failed_id)], "worker-a", lease_s=30)
    app.cancel(stale_id)
    outcomes = [store.Outcome(done_id, 1, "e1", ok=True, result={"x": 1}),
                store.Outcome(stale_id, 1, "e2", ok=True, result={"x": 2}),
                store.Outcome(failed_id, 1, "e3", ok=False, error_code="internal_error", error_message="boom")]
    entries = [("e4", fresh_id), ("e5", fresh_id), ("e6", done_id)]
    if app.engine.dialect.name != "postgresql":
        with pytest.raises(ValueError, match="needs PostgreSQL"):
            store.claim_and_finalize(app.engine, entries, "worker-a", 30, outcomes)
        return
    claimed, skip, done, left = store.claim_and_finalize(app.engine, entries, "worker-a", 30, outcomes)
    assert [(d.job_id, d.action) for d in done] == [(done_id, "succeeded")]
    assert app.get(done_id).result == {"x": 1} and actions(app, done_id)[-1] == "succeeded"
    # the cancelled job's late success and the failure are left to the general path, unwritten
    assert {o.job_id for o in left} == {stale_id, failed_id}
    assert app.get(stale_id).status == "cancelled" and app.get(stale_id).result is None
    assert app.get(failed_id).status == "running"
    assert [(c.job.id, c.job.attempt_id, c.entry_id) for c in claimed] == [(fresh_id, 1, "e4")]
    assert actions(app, fresh_id)[-1] == "claimed"
    # a duplicate entry and the entry of a job already final are acknowledged without a run
    assert sorted(skip) == ["e5", "e6"]


def test_live_lease_cannot_be_claimed_twice(app):
    job_id = app.submit("conveyor.echo")
    a, _, _ = store.claim(app.engine, [("e1", job_id)], "worker-a", lease_s=30)
    b, skip, _ = store.claim(app.engine, [("e2", job_id)], "worker-b", lease_s=30)
    assert a and not b and skip == ["e2"]


def test_heartbeat_keeps_a_long_job_and_detects_a_lost_lease(app):
    job_id = app.submit("conveyor.echo")
    store.claim(app.engine, [("e1", job_id)], "worker-a", lease_s=0.5)
    for _ in range(3):
        time.sleep(0.3)
        assert store.renew(app.engine, "worker-a", {job_id: 1}, lease_s=0.5) == {}
    time.sleep(0.7)
    got, _, _ = store.claim(app.engine, [("e2", job_id)], "worker-b", lease_s=5)
    assert got and got[0].job.attempt_id == 2
    assert store.renew(app.engine, "worker-a", {job_id: 1}, lease_s=0.5) == {job_id: "lease_lost"}
    assert "lease_lost" in actions(app, job_id)


def test_a_heartbeat_racing_its_own_finalize_loses_nothing(app):
    """The heartbeat snapshots held jobs, then the attempt commits: no lease_lost, no cancel."""
    ok_id, retry_id = app.submit("conveyor.echo"), app.submit("conveyor.echo")
    store.claim(app.engine, [("e1", ok_id), ("e2", retry_id)], "worker-a", lease_s=30)
    store.finalize(app.engine, [store.Outcome(ok_id, 1, "e1", ok=True, result={"x": 1}),
                                store.Outcome(retry_id, 1, "e2", ok=False, error_code="internal_error",
                                              error_message="boom", retryable=True, retry_delay_s=60)])
    assert store.renew(app.engine, "worker-a", {ok_id: 1, retry_id: 1}, lease_s=30) == {}
    assert "lease_lost" not in actions(app, ok_id) + actions(app, retry_id)


def test_a_result_that_is_not_json_fails_the_attempt_and_the_worker_goes_on(app, pipeline):
    bad = app.submit("test.not_json")
    good = app.submit_many([JobSpec("conveyor.echo", {"i": i}) for i in range(5)])
    with pipeline() as p:
        done = p.wait([bad, *good])
    assert done[0].status.value == "failed" and done[0].error_code == "internal_error"
    assert "cannot be stored" in done[0].last_error and done[0].attempts == 1
    assert all(j.status.value == "succeeded" for j in done[1:])


def test_a_handler_ignoring_cancellation_gives_its_slot_back(app, pipeline):
    job_id = app.submit("test.ignore_cancel", {"seconds": 60})
    with pipeline(concurrency=1) as p:
        p.wait([job_id], statuses=("running",))
        app.cancel(job_id)
        nxt = app.submit("conveyor.echo", {"after": "cancel"})
        (job,) = p.wait([nxt], timeout=30)
        assert job.status.value == "succeeded" and p.worker.stats.abandoned == 1


def test_run_at_with_a_time_zone_is_accepted(app):
    from datetime import datetime, timezone
    job_id = app.submit("conveyor.echo", run_at=datetime.now(timezone(timedelta(hours=5))) + timedelta(hours=1))
    due = app.get(job_id).next_attempt_at
    assert timedelta(minutes=59) < due - utcnow() < timedelta(minutes=61)


def test_observers_see_every_committed_event(app, pipeline):
    import conveyor_testkinds
    conveyor_testkinds.EVENTS.clear()
    job_id = app.submit("conveyor.echo", {"seen": True})
    with pipeline() as p:
        p.wait([job_id])
    seen = [e["action"] for e in conveyor_testkinds.EVENTS if e["job_id"] == job_id]
    assert seen == ["submitted", "dispatched", "claimed", "succeeded"]
    assert all(isinstance(e["created_at"], str) for e in conveyor_testkinds.EVENTS)


def test_submit_succeeds_with_pressure_limits_while_the_queue_is_down(app):
    from test_outage import SwitchableQueue

    from conveyor.errors import QueuePressure
    q = SwitchableQueue(app.queue)
    app._queue = q
    app.settings = app.settings.with_(pressure_max_length=1)
    app.submit("conveyor.echo")
    from conveyor.outbox import Dispatcher, run_until_empty
    run_until_empty(Dispatcher(app.store, q))
    import pytest
    with pytest.raises(QueuePressure):
        app.submit("conveyor.echo")
    q.down.set()
    assert app.submit("conveyor.echo")  # the outbox holds it until the queue is back
