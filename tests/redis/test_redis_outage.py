"""Outbox chaos: a private Redis is killed while 200 jobs are submitted, then brought back."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

from redis_support import Loops, wait_until
from sqlalchemy import func, select

from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.outbox import Dispatcher
from conveyor.schema import events, jobs
from conveyor.worker import Worker

N_JOBS = 200
DOWN_S = 4.0


def test_redis_killed_while_submitting_loses_nothing_and_runs_each_job_once(app, env, private_redis, capsys):
    settings = load_settings(env={**env, "CONVEYOR_QUEUE_URL": private_redis.url,
                                  "CONVEYOR_DISPATCH_BACKOFF_MAX_SECONDS": "2"})
    cv = Conveyor(settings, engine=app.engine, plugins=app.plugins)
    cv.init_db()
    dispatcher = Dispatcher(cv.store, cv.queue, batch=100, backoff_cap_s=settings.dispatch_backoff_max_seconds)
    workers = [Worker(cv, name=f"w{i}", concurrency=4, block_ms=200) for i in range(2)]
    ids: list[str] = []

    def submit_all() -> None:
        for i in range(N_JOBS):
            ids.append(cv.submit("conveyor.echo", {"i": i}))  # only the database is involved
            time.sleep(0.02)

    with Loops(dispatcher, *workers):
        submitter = threading.Thread(target=submit_all)
        submitter.start()
        wait_until(lambda: len(ids) >= 20, what="the first submits")
        private_redis.proc.kill()  # kill -9: no shutdown, no goodbye to clients
        private_redis.proc.wait(10)
        t_down = time.monotonic()
        time.sleep(DOWN_S)
        private_redis.start()
        t_up = time.monotonic()
        submitter.join(60)
        assert len(ids) == N_JOBS

        def all_final() -> bool:
            with cv.engine.connect() as c:
                return c.execute(select(func.count()).where(jobs.c.id.in_(ids),
                                                            jobs.c.status == "succeeded")).scalar() == N_JOBS
        wait_until(all_final, timeout=120, what="every job to succeed after Redis came back")
        t_done = time.monotonic()
    with cv.engine.connect() as c:
        per_job = Counter((r.job_id, r.action) for r in c.execute(
            select(events.c.job_id, events.c.action).where(events.c.job_id.in_(ids))))
        statuses = Counter(r[0] for r in c.execute(select(jobs.c.status).where(jobs.c.id.in_(ids))))
    lost = N_JOBS - statuses["succeeded"]
    finalized_twice = [j for j in ids if per_job[(j, "succeeded")] != 1]
    ran_twice = [j for j in ids if per_job[(j, "claimed")] + per_job[(j, "reclaimed")] != 1]
    deliveries = sum(w.stats.read for w in workers)
    report = {"jobs": N_JOBS, "redis_down_s": round(t_up - t_down, 2), "loss_rate": lost / N_JOBS,
              "duplicate_deliveries": deliveries - N_JOBS, "duplicate_runs": len(ran_twice),
              "dispatch_failures": dispatcher.failures_total,
              "worker_queue_errors": sum(w.stats.queue_errors for w in workers),
              "recover_s": round(t_done - t_up, 2)}
    with capsys.disabled():
        print("\nredis outage:", json.dumps(report))
    assert lost == 0 and statuses == Counter({"succeeded": N_JOBS})
    assert finalized_twice == [] and ran_twice == []
    assert dispatcher.failures_total > 0, "the outage was not seen by the dispatcher"
    # the workers backed off: a spinning loop would fail thousands of times in a few seconds
    assert 0 < report["worker_queue_errors"] < 20 * len(workers)
    p = cv.queue.pressure()
    assert (p.length, p.pending) == (0, 0)
    cv.close()


def test_the_outbox_gauge_rises_during_a_real_redis_outage_and_falls_after(app, env, private_redis):
    """The gauge operators alert on is measured before the round touches the queue, so an outage shows in it."""
    from conveyor.metrics import enable
    from conveyor.outbox import run_until_empty
    from conveyor.scheduler import Scheduler

    settings = load_settings(env={**env, "CONVEYOR_QUEUE_URL": private_redis.url})
    cv = Conveyor(settings, engine=app.engine, plugins=app.plugins)
    cv.init_db()
    registry = enable().registry
    scheduler = Scheduler(cv, name="gauge-test")
    private_redis.proc.kill()  # kill -9
    private_redis.proc.wait(10)
    ids = [cv.submit("conveyor.echo", {"i": i}) for i in range(3)]  # the outbox takes them
    try:
        scheduler.run_once()
    except Exception:
        pass  # the repair cannot read the queue; the gauge must be set all the same
    assert registry.get_sample_value("conveyor_outbox_pending") == 3
    private_redis.start()
    assert run_until_empty(Dispatcher(cv.store, cv.queue)) == 3
    scheduler.run_once()
    assert registry.get_sample_value("conveyor_outbox_pending") == 0
    assert registry.get_sample_value("conveyor_queue_entries", {"state": "length"}) >= 3
    assert {cv.get(i).status.value for i in ids} == {"queued"}


def test_diagnose_says_queue_unreachable_when_the_entry_cannot_be_looked_up(app, env, private_redis):
    from conveyor.diagnostics import diagnose
    from conveyor.outbox import run_until_empty

    cv = Conveyor(load_settings(env={**env, "CONVEYOR_QUEUE_URL": private_redis.url}), engine=app.engine,
                  plugins=app.plugins)
    cv.init_db()
    job = cv.submit("conveyor.echo", {})
    assert run_until_empty(Dispatcher(cv.store, cv.queue)) == 1
    private_redis.proc.kill()  # kill -9 with the entry published
    private_redis.proc.wait(10)
    report = diagnose(cv, job)
    assert report["cause_code"] == "queue_unreachable", report
    assert any(f["check"] == "queue" and not f["ok"] for f in report["findings"])
