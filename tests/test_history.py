"""The dashboard's history: the scheduler's per-minute roll-up, confined to each tenant, and its endpoint."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from conveyor import history
from conveyor.db import utcnow
from conveyor.scheduler import Scheduler
from conveyor.schema import jobs, stats
from conveyor.store import Scope


def backdate(app, now) -> None:
    """Move every job's times into the minute before ``now``'s, 10 s after it starts (whatever minute they ran in)."""
    with app.engine.begin() as c:  # row by row: SQLite stores times as text, so no SQL arithmetic on them
        rows = c.execute(select(jobs.c.id, jobs.c.created_at, jobs.c.finished_at)).all()
        d = min(r.created_at for r in rows) - (now.replace(second=10, microsecond=0) - timedelta(minutes=1))
        for job_id, created, finished in rows:
            c.execute(update(jobs).where(jobs.c.id == job_id).values(
                created_at=created - d, finished_at=finished - d if finished else None))


def test_a_minute_is_rolled_up_per_tenant_once(app, pipeline):
    ours = [app.submit("conveyor.echo", {"i": i}, tenant="acme") for i in range(3)]
    failed = app.submit("conveyor.fail", {"code": "invalid_payload"}, tenant="acme")
    theirs = app.submit("conveyor.echo", {}, tenant="globex")
    with pipeline() as p:
        p.wait([*ours, failed, theirs])
    now = utcnow()
    backdate(app, now)
    assert history.roll_up(app, now) == 1
    assert history.roll_up(app, now) == 0  # recorded once
    last = history.recent(app, Scope("acme"), 3, now=now)[-1]
    assert (last["submitted"], last["succeeded"], last["failed"]) == (4, 3, 1)
    assert last["recorded"] and last["p50_ms"] is not None and last["p99_ms"] >= last["p50_ms"]
    assert "queue_length" not in last  # the deployment's gauges are for admins
    other = history.recent(app, Scope("globex"), 3, now=now)[-1]
    assert (other["submitted"], other["succeeded"], other["failed"]) == (1, 1, 0)
    whole = history.recent(app, Scope(None), 3, now=now, gauges=True)[-1]
    assert (whole["submitted"], whole["succeeded"], whole["failed"]) == (5, 4, 1)
    assert whole["queue_length"] is not None and whole["outbox_pending"] == 0
    nobody = history.recent(app, Scope("initech"), 3, now=now)[-1]
    assert (nobody["submitted"], nobody["succeeded"]) == (0, 0)  # recorded, and nothing happened
    earlier = history.recent(app, Scope("acme"), 3, now=now)[0]
    assert earlier["recorded"] is False and earlier["submitted"] is None  # not recorded: a gap, not a zero


def test_the_leader_rolls_up_and_old_rows_are_deleted(app):
    long_ago = utcnow().replace(second=0, microsecond=0) - history.KEEP - timedelta(hours=1)
    with app.engine.begin() as c:
        c.execute(stats.insert(), [{"minute": long_ago, "tenant_id": "*", "submitted": 1, "succeeded": 0,
                                    "failed": 0}])
    report = Scheduler(app).run_once()
    assert report["leader"] is True
    with app.engine.connect() as c:
        minutes = [r.minute for r in c.execute(select(stats.c.minute).where(stats.c.tenant_id == "*"))]
    # the old row is gone, and the gap since it was filled as far back as the charts reach
    assert long_ago not in minutes and len(minutes) == history.SPAN


def test_catching_up_fills_at_most_the_charts_span(app):
    now = utcnow()
    with app.engine.begin() as c:
        c.execute(stats.insert(), [{"minute": now.replace(second=0, microsecond=0) - timedelta(hours=5),
                                    "tenant_id": "*", "submitted": 0, "succeeded": 0, "failed": 0}])
    assert history.roll_up(app, now) == history.SPAN
