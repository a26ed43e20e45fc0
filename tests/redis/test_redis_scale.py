"""Two worker processes x 4 slots, 5,000 echo jobs, PostgreSQL + Redis: each job finalized exactly once."""

from __future__ import annotations

import signal
from collections import Counter

import pytest
from redis_support import wait_until
from sqlalchemy import func, select

from conveyor.schema import events, jobs
from conveyor.store import JobSpec

N_JOBS = 5000


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_workers_four_slots_5000_jobs_each_finalized_once(app, spawn):
    ids: list[str] = []
    for start in range(0, N_JOBS, 500):
        ids += app.submit_many([JobSpec("conveyor.echo", {"i": i}) for i in range(start, start + 500)])
    procs = [spawn.run("dispatcher", log="dispatcher"), spawn.worker("w1", concurrency=4),
             spawn.worker("w2", concurrency=4)]

    def succeeded() -> bool:
        with app.engine.connect() as c:
            return c.execute(select(func.count()).where(jobs.c.status == "succeeded")).scalar() == N_JOBS
    wait_until(succeeded, timeout=600, every=0.5, what=f"{N_JOBS} jobs to succeed")
    for p in procs:
        p.send_signal(signal.SIGTERM)
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    with app.engine.connect() as c:
        acts = Counter((r.job_id, r.action) for r in c.execute(select(events.c.job_id, events.c.action)))
        by_consumer = Counter(r[0].get("consumer") for r in c.execute(
            select(events.c.payload).where(events.c.action == "claimed")))
        attempts = Counter(r[0] for r in c.execute(select(jobs.c.attempt_id)))
    assert all(acts[(j, "succeeded")] == 1 for j in ids)
    assert all(acts[(j, "claimed")] == 1 and acts[(j, "reclaimed")] == 0 for j in ids)
    assert sum(n for (_, a), n in acts.items() if a == "stale_result") == 0
    assert attempts == Counter({1: N_JOBS})
    assert set(by_consumer) == {"w1", "w2"} and sum(by_consumer.values()) == N_JOBS
    p = app.queue.pressure()
    assert (p.length, p.pending) == (0, 0)
