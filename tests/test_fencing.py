"""The fencing rule's three renderings agree, on each database, and one deployment's writes wake only its own."""

from __future__ import annotations

import threading

from sqlalchemy import select, text, update

from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.fencing import fenced, fenced_sql, is_live
from conveyor.plugins import load_plugins
from conveyor.schema import jobs

TEST_PLUGINS = "conveyor_testkinds"  # the test job kinds (tests/plugins)


def _running_at_attempt(app, attempt: int) -> str:
    job_id = app.submit("conveyor.echo")
    with app.engine.begin() as c:
        c.execute(update(jobs).where(jobs.c.id == job_id).values(status="running", attempt_id=attempt))
    return job_id


def _matches(app, job_id: str, attempt: int) -> tuple[bool, bool, bool]:
    """What each rendering says of ``attempt`` for the job: clause, locked-row test, SQL text."""
    with app.engine.connect() as c:
        by_clause = c.execute(select(jobs.c.id).where(fenced(job_id, attempt))).first() is not None
        row = c.execute(select(jobs.c.attempt_id, jobs.c.status).where(jobs.c.id == job_id)).first()
        by_text = c.execute(text(f"SELECT j.id FROM conveyor_jobs AS j WHERE j.id = :id AND "
                                 f"{fenced_sql('j', ':attempt')}"), {"id": job_id, "attempt": attempt}).first()
    return by_clause, is_live(row, attempt), by_text is not None


def test_only_the_live_attempt_passes_the_fence_in_every_rendering(app):
    job_id = _running_at_attempt(app, 2)
    assert _matches(app, job_id, 2) == (True, True, True)
    assert _matches(app, job_id, 1) == (False, False, False)  # a zombie's older attempt
    assert _matches(app, job_id, 3) == (False, False, False)
    app.cancel(job_id)  # the same attempt, no longer running: fenced out too
    assert _matches(app, job_id, 2) == (False, False, False)


def test_a_widened_fence_lets_a_cancelled_attempt_record_why_it_stopped(app):
    job_id = _running_at_attempt(app, 1)
    app.cancel(job_id)
    with app.engine.connect() as c:
        widened = c.execute(select(jobs.c.id).where(fenced(job_id, 1, ("running", "cancelled")))).first()
    assert widened is not None
    with app.store.live_attempt(job_id, 1, ("running", "cancelled")) as live:
        assert live is not None and live.attempt_id == 1
    with app.store.live_attempt(job_id, 1) as live:
        assert live is None


def test_a_submit_wakes_its_own_deployments_dispatchers_and_not_anothers(env):
    """Two deployments in one process: each job store's wake-up is its own."""
    settings = load_settings(env=env)
    ours, theirs = (Conveyor(settings, plugins=load_plugins(TEST_PLUGINS)) for _ in range(2))
    try:
        ours.init_db()
        woken: dict[str, bool] = {}
        ready = threading.Barrier(3)

        def wait(name: str, app: Conveyor) -> None:
            with app.store.pending._cond:  # hold the condition so the submit cannot notify before we wait
                ready.wait()
                woken[name] = app.store.pending._cond.wait(5.0 if name == "ours" else 0.5)

        threads = [threading.Thread(target=wait, args=(n, a)) for n, a in (("ours", ours), ("theirs", theirs))]
        for t in threads:
            t.start()
        ready.wait()
        ours.submit("conveyor.echo")
        for t in threads:
            t.join()
        assert woken == {"ours": True, "theirs": False}
    finally:
        ours.close()
        theirs.close()
