"""Real processes, real kill -9: crash safety, poison jobs, scheduler takeover, two workers at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select

from conveyor import lease
from conveyor.outbox import Dispatcher, run_until_empty
from conveyor.scheduler import LEADER_LEASE
from conveyor.schema import events
from conveyor.store import JobSpec

from pipeline_support import TESTS, wait_for


def spawn(env, *args):
    full = dict(os.environ)
    full.update(env)
    full["PYTHONPATH"] = os.pathsep.join([str(TESTS / "plugins"), full.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "conveyor", *args], env=full,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def running_count(app, ids):
    return sum(1 for j in ids if app.get(j).status.value == "running")


def test_kill_9_mid_job_then_another_worker_finishes_each_job_once(app, env):
    ids = app.submit_many([JobSpec("conveyor.sleep", {"seconds": 2}) for _ in range(6)])
    run_until_empty(Dispatcher(app.store, app.queue))
    a = spawn(env, "worker", "--concurrency", "4", "--name", "worker-a")
    try:
        deadline = time.monotonic() + 30
        while running_count(app, ids) < 4:
            assert time.monotonic() < deadline, "worker-a never started its jobs"
            assert a.poll() is None, a.stderr.read().decode()
            time.sleep(0.05)
        victims = [j for j in ids if app.get(j).status.value == "running"]
        a.kill()  # SIGKILL: no cleanup, leases stay until they expire
        a.wait()
    finally:
        if a.poll() is None:
            a.kill()
    b = spawn(env, "worker", "--concurrency", "4", "--name", "worker-b")
    try:
        done = wait_for(app, ids, timeout=60)
    finally:
        stop(b)
    assert all(j.status.value == "succeeded" for j in done)
    for job in done:
        acts = [e["action"] for e in app.events(job.id)]
        assert acts.count("succeeded") == 1
        if job.id in victims:
            assert job.attempt_id == 2 and "reclaimed" in acts, acts
            assert job.error_history[0]["code"] == "lease_lost"
        else:
            assert job.attempt_id == 1


def test_poison_job_that_kills_its_worker_ends_failed_after_max_attempts(app, env):
    job_id = app.submit("test.crash", max_attempts=2)
    ok = app.submit("conveyor.echo", {"still": "works"})
    run_until_empty(Dispatcher(app.store, app.queue))
    deaths = 0
    deadline = time.monotonic() + 90
    while app.get(job_id).status.value != "failed":
        assert time.monotonic() < deadline, f"poison job still {app.get(job_id).status} after {deaths} deaths"
        w = spawn(env, "worker", "--concurrency", "2")
        try:
            while w.poll() is None and app.get(job_id).status.value != "failed":
                time.sleep(0.1)
                assert time.monotonic() < deadline
        finally:
            if w.poll() is None:
                stop(w)
            elif w.returncode == -signal.SIGKILL:
                deaths += 1
    job = app.get(job_id)
    assert job.error_code == "lease_lost" and job.attempts == 2
    assert deaths == 2
    assert [e["code"] for e in job.error_history] == ["lease_lost", "lease_lost"]
    from conveyor.diagnostics import diagnose
    assert diagnose(app, job_id)["cause_code"] == "poison_message"  # two real kill -9s
    w = spawn(env, "worker", "--concurrency", "2", "--burst")
    w.wait(60)
    assert app.get(ok).status.value == "succeeded"


def test_killed_scheduler_leader_is_replaced(app, env):
    a = spawn(env, "scheduler", "--interval", "0.2")
    b = None
    try:
        deadline = time.monotonic() + 30
        while not (lease.current(app.engine, LEADER_LEASE) or {}).get("holder"):
            assert time.monotonic() < deadline and a.poll() is None
            time.sleep(0.05)
        first = lease.current(app.engine, LEADER_LEASE)["holder"]
        assert first.endswith(f"-{a.pid}-scheduler")
        a.kill()
        a.wait()
        b = spawn(env, "scheduler", "--interval", "0.2")
        while lease.current(app.engine, LEADER_LEASE)["holder"] in (first, None):
            assert time.monotonic() < deadline + 30, "the dead leader was never replaced"
            assert b.poll() is None, b.stderr.read().decode()
            time.sleep(0.1)
        assert lease.current(app.engine, LEADER_LEASE)["holder"].endswith(f"-{b.pid}-scheduler")
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow
def test_two_worker_processes_finalize_2000_jobs_each_once(app, env):
    n = 2000
    ids = app.submit_many([JobSpec("conveyor.echo", {"i": i}) for i in range(n)])
    run_until_empty(Dispatcher(app.store, app.queue, batch=1000))
    procs = [spawn(env, "worker", "--concurrency", "4", "--burst") for _ in range(2)]
    for p in procs:
        assert p.wait(300) == 0, p.stderr.read().decode()[-2000:]
    done = wait_for(app, ids, timeout=30)
    assert all(j.status.value == "succeeded" and j.attempt_id == 1 for j in done)
    with app.engine.connect() as c:
        per_action = dict(c.execute(select(events.c.action, func.count()).group_by(events.c.action)).all())
    assert per_action["succeeded"] == n and per_action["claimed"] == n
    assert "stale_result" not in per_action and "reclaimed" not in per_action
