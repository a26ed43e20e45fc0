"""Each of `conveyor diagnose`'s core cause codes, from a situation made for real (real database, real queue,
real dispatcher and worker code), on SQLite and PostgreSQL (and Redis in the redis environment).
`queue_unreachable` is made with a private Redis that is killed: tests/redis/test_redis_outage.py."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from conveyor import presence, store
from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.db import utcnow
from conveyor.diagnostics import CAUSE_CODES, diagnose
from conveyor.outbox import Dispatcher, run_until_empty

from pipeline_support import wait_for


def code(app, job_id) -> str:
    report = diagnose(app, job_id)
    assert report["cause_code"] in CAUSE_CODES, report
    assert report["evidence"] and report["next_step"], report
    return str(report["cause_code"])


def dispatch(app) -> None:
    run_until_empty(Dispatcher(app.store, app.queue))


def take(app, consumer: str = "w-test"):
    """Read the job's entry from the queue as a worker does, and claim it (lease 30 s)."""
    entries = app.queue.read(consumer, 10, block_ms=0) if not app.queue.transactional else None
    if entries is None:
        with app.engine.begin() as conn:
            entries = app.queue.take(conn, consumer, 10)
    claimed, _, _ = store.claim(app.engine, [(e.entry_id, e.job_id) for e in entries], consumer, 30)
    return claimed


def test_finished_cancelled_and_awaiting_dispatch(app, pipeline):
    waiting = app.submit("conveyor.echo", {})
    assert code(app, waiting) == "awaiting_dispatch"
    app.cancel(waiting)
    assert code(app, waiting) == "cancelled"
    with pipeline() as p:
        done = app.submit("conveyor.echo", {})
        wait_for(app, [done])
        assert p
    report = diagnose(app, done)
    assert report["cause_code"] == "finished"
    assert all(f["ok"] for f in report["findings"] if f["check"] == "scheduler")  # no leader is fine for it


def test_failed_permanently_and_retrying(app, pipeline):
    with pipeline():
        gone = app.submit("conveyor.fail", {"code": "invalid_payload"})  # not retried
        wait_for(app, [gone])
    report = diagnose(app, gone)
    assert report["cause_code"] == "failed_permanently"
    assert "will not run again" in report["cause"] and "retries" not in report["cause"]
    flaky = app.submit("test.flaky", {"succeed_on": 3}, max_attempts=3)
    dispatch(app)
    claimed = take(app)
    store.finalize(app.engine, [store.Outcome(claimed[0].job.id, claimed[0].job.attempt_id, claimed[0].entry_id,
                                              ok=False, error_code="connector_failed", error_message="down",
                                              retryable=True, retry_delay_s=60)])
    assert code(app, flaky) == "retrying"


def test_scheduled_for_later(app):
    later = app.submit("conveyor.echo", {}, run_at=utcnow() + timedelta(hours=1))
    assert code(app, later) == "scheduled"


def test_queue_unreachable_with_the_outbox_pending(app):
    down = Conveyor(load_settings(env={**_env(app), "CONVEYOR_QUEUE_URL": "redis://127.0.0.1:9/0"}),
                    engine=app.engine, plugins=app.plugins)
    job = down.submit("conveyor.echo", {})
    assert Dispatcher(down.store, down.queue).run_once().failed == 1
    assert code(down, job) == "queue_unreachable_outbox_pending"


def test_in_the_queue_without_a_consumer_without_a_handler_and_behind_others(app):
    job = app.submit("conveyor.echo", {})
    unknown = app.submit("nobody.handles_this", {})
    dispatch(app)
    assert code(app, job) == "stuck_no_consumer"
    presence.register(app.engine, "w-live", "worker", 2)  # a live worker, as a running one records itself
    assert code(app, job) == "queued_behind_others"
    assert code(app, unknown) == "kind_not_handled"


def test_lost_queue_entry(app):
    job = app.submit("conveyor.echo", {})
    dispatch(app)
    entry = app.queue.read("w-thief", 1, block_ms=0)[0] if not app.queue.transactional else None
    if entry is None:
        with app.engine.begin() as conn:
            entry = app.queue.take(conn, "w-thief", 1)[0]
    app.queue.ack([entry.entry_id])  # acknowledged without running: the job stays queued, the entry is gone
    assert code(app, job) == "lost_queue_entry"


def test_running_healthy_then_lease_expired(app):
    job = app.submit("conveyor.sleep", {"seconds": 60})
    dispatch(app)
    presence.register(app.engine, "w-test", "worker", 1)
    claimed = take(app)
    assert [c.job.id for c in claimed] == [job]
    assert code(app, job) == "healthy_running"
    store.renew(app.engine, "w-test", {job: claimed[0].job.attempt_id}, lease_s=0.2)  # a last, short beat
    time.sleep(0.4)
    assert code(app, job) == "lease_expired_awaiting_reclaim"


def _env(app) -> dict[str, str]:
    s = app.settings
    return {"CONVEYOR_DB_URL": s.db_url, "CONVEYOR_STORAGE_URL": s.storage_url, "CONVEYOR_STREAM_KEY": s.stream_key,
            "CONVEYOR_CONFIG": ""}


@pytest.mark.parametrize("name", sorted(CAUSE_CODES))
def test_every_cause_code_is_documented(name):
    from pathlib import Path
    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    assert f"`{name}`" in doc, f"cause code {name} has no entry in docs/operations.md"
