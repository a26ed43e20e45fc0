"""Faults on the Redis path: kill -9, long jobs, trimmed streams, crashes between read and claim,
late consumer groups, SIGTERM, unreachable Redis, backpressure."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import redis
from redis_support import Loops, free_port, subprocess_env, wait_until

from conveyor import store
from conveyor.app import Conveyor
from conveyor.errors import QueuePressure
from conveyor.outbox import Dispatcher, run_until_empty
from conveyor.queue import Message
from conveyor.scheduler import Scheduler
from conveyor.store import JobSpec, Outcome
from conveyor.worker import Worker


def actions(app, job_id):
    return [e["action"] for e in app.events(job_id)]


def running_under(app, job_id, owner):
    j = app.get(job_id)
    return j.status.value == "running" and j.lease_owner == owner


def finished(app, ids):
    return all(app.get(i).status.value in ("succeeded", "failed", "cancelled") for i in ids)


def test_kill9_mid_job_is_reclaimed_after_lease_and_old_attempt_is_fenced(app, spawn):
    job = app.submit("conveyor.sleep", {"seconds": 3})
    with Loops(Dispatcher(app.store, app.queue)):
        a = spawn.worker("A")
        wait_until(lambda: running_under(app, job, "A"), what="worker A to claim the job")
        a.send_signal(signal.SIGKILL)
        assert a.wait(10) == -signal.SIGKILL
        b = Worker(app, name="B", concurrency=1, block_ms=100)
        with Loops(b):
            wait_until(lambda: finished(app, [job]), what="the job to finish on B")
    j = app.get(job)
    assert j.status.value == "succeeded" and j.result == {"slept": 3}
    assert j.attempt_id == 2 and j.attempts == 2
    assert j.error_history[-1]["code"] == "lease_lost" and j.error_history[-1]["attempt"] == 1
    rec = [e for e in app.events(job) if e["action"] == "reclaimed"]
    assert len(rec) == 1 and rec[0]["payload"]["previous_owner"] == "A"
    assert rec[0]["payload"]["previous_attempt"] == 1 and rec[0]["attempt_id"] == 2
    assert b.stats.reclaimed == 1
    # the killed attempt's result, arriving late, changes nothing
    done, _ = store.finalize(app.engine, [Outcome(job, 1, "late", ok=True, result={"stale": True})])
    assert done[0].action == "stale_result"
    assert app.get(job).result == {"slept": 3}
    p = app.queue.pressure()
    assert (p.length, p.pending) == (0, 0)


def test_long_job_with_live_heartbeat_is_not_reclaimed_by_a_peer(app, spawn):
    s = app.settings
    seconds = 2.5 * (s.lease_seconds + s.reclaim_grace_seconds)
    job = app.submit("conveyor.sleep", {"seconds": seconds})
    with Loops(Dispatcher(app.store, app.queue)):
        spawn.worker("A")
        wait_until(lambda: running_under(app, job, "A"), what="worker A to claim the job")
        # a peer that reclaims often, with the same lease + grace
        b = Worker(app, name="B", concurrency=2, block_ms=100, reclaim_interval_s=0.2)
        with Loops(b):
            wait_until(lambda: finished(app, [job]), timeout=90, what="the long job to finish")
    j = app.get(job)
    assert j.status.value == "succeeded" and j.attempt_id == 1 and j.attempts == 1
    assert "reclaimed" not in actions(app, job) and "lease_lost" not in actions(app, job)
    assert b.stats.read == 0 and b.stats.reclaimed == 0


def test_trimmed_stream_is_repaired_by_the_scheduler_once_per_lease(app):
    ids = app.submit_many([JobSpec("conveyor.echo", {"i": i}) for i in range(20)])
    run_until_empty(Dispatcher(app.store, app.queue))
    q = app.queue
    # 8 entries read by a consumer that died before claiming
    q.read("died-before-claim", 8)
    # 2 jobs claimed by a worker that died; their leases run out
    stolen = q.read("died-while-running", 2)
    store.claim(app.engine, [(e.entry_id, e.job_id) for e in stolen], "died-while-running", lease_s=0.3)
    # trim past everything: the 10 pending and the 10 never-delivered entries
    entry_ids = [r["payload"]["stream_entry_id"] for i in ids for r in app.events(i)
                 if r["action"] == "dispatched"]
    assert q.trim(0) == 20
    assert q.held(entry_ids) == set()
    # jobs still in the stream are not touched by repair
    untouched = app.submit_many([JobSpec("conveyor.echo", {"late": i}) for i in range(5)])
    sched = Scheduler(app, name="repairer")
    repaired: set[str] = set()

    def repair_round():
        assert sched.is_leader()
        repaired.update(sched.repair().republished)
        return len(repaired) >= 20

    run_until_empty(Dispatcher(app.store, app.queue))
    wait_until(repair_round, timeout=30, what="repair to republish the 20 lost jobs", every=0.2)
    assert repaired == set(ids)
    # at most once per lease period: an immediate second round republishes nothing
    assert sched.repair().republished == []
    with Loops(Dispatcher(app.store, app.queue), Worker(app, name="W", concurrency=4, block_ms=100)):
        wait_until(lambda: finished(app, ids + untouched), what="all jobs to finish")
    for i in ids + untouched:
        j = app.get(i)
        assert j.status.value == "succeeded"
        assert actions(app, i).count("republished") == (1 if i in ids else 0)
        assert actions(app, i).count("succeeded") == 1
    assert sorted(app.get(e.job_id).attempt_id for e in stolen) == [2, 2]


def test_crash_between_read_and_claim_still_runs_the_job(app, spawn):
    ids = app.submit_many([JobSpec("conveyor.echo", {"i": i}) for i in range(3)])
    run_until_empty(Dispatcher(app.store, app.queue))
    dispatched = {i: next(e["payload"]["stream_entry_id"] for e in app.events(i) if e["action"] == "dispatched")
                  for i in ids}
    crash = spawn.python(
        "import os, signal\n"
        "from conveyor.app import Conveyor\n"
        "got = Conveyor().queue.read('crasher', 10, block_ms=5000)\n"
        "print('read', len(got), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n", log="crasher")
    assert crash.wait(30) == -signal.SIGKILL
    assert "read 3" in spawn.output("crasher")
    assert app.queue.pressure().pending == 3
    w = Worker(app, name="W", concurrency=2, block_ms=100)
    with Loops(w):  # no dispatcher, no scheduler: only the reclaim loop can find these
        wait_until(lambda: finished(app, ids), what="the crashed reads to be reclaimed and run")
    for i in ids:
        j = app.get(i)
        assert j.status.value == "succeeded" and j.attempt_id == 1
        claimed = [e for e in app.events(i) if e["action"] == "claimed"]
        assert len(claimed) == 1 and claimed[0]["payload"]["entry_id"] == dispatched[i]
    assert app.queue.pressure().pending == 0


def test_group_created_after_entries_were_added_loses_none(app):
    app.queue.delete_streams()  # no stream, no group
    ids = app.submit_many([JobSpec("conveyor.echo", {"i": i}) for i in range(25)])
    assert run_until_empty(Dispatcher(app.store, app.queue)) == 25
    r = app.queue.client
    assert r.xlen(app.settings.stream_key) == 25
    with pytest.raises(redis.ResponseError):
        r.xinfo_groups(app.settings.stream_key + ":none")
    assert r.xinfo_groups(app.settings.stream_key) == []
    with Loops(Worker(app, name="W", concurrency=4, block_ms=100)):  # the worker creates the group
        wait_until(lambda: finished(app, ids), what="all jobs added before the group to finish")
    assert all(app.get(i).status.value == "succeeded" for i in ids)


def test_group_created_after_entries_queue_level(rqueue):
    rqueue.delete_streams()
    ids = rqueue.publish([Message(f"j{i}", 0, {"job_id": f"j{i}"}) for i in range(5)])
    rqueue.ensure_group()
    got = rqueue.read("c", 10)
    assert [e.entry_id for e in got] == ids


def test_sigterm_finishes_nothing_late_and_releases_to_a_peer_at_once(app, spawn):
    job = app.submit("conveyor.sleep", {"seconds": 4})
    with Loops(Dispatcher(app.store, app.queue)):
        a = spawn.worker("A", grace=0.3)
        wait_until(lambda: running_under(app, job, "A"), what="worker A to claim the job")
        a.send_signal(signal.SIGTERM)
        assert a.wait(30) == 0
        assert app.get(job).status.value == "queued"
        b = Worker(app, name="B", concurrency=1, block_ms=100)
        with Loops(b):
            wait_until(lambda: finished(app, [job]), what="the released job to finish on B")
    j = app.get(job)
    acts = actions(app, job)
    assert j.status.value == "succeeded" and j.attempt_id == 2 and j.attempts == 1
    assert "released" in acts and "reclaimed" not in acts and "lease_lost" not in acts
    assert b.stats.reclaimed == 0
    assert "released" in spawn.output("A")
    assert app.queue.pressure().pending == 0


def test_unreachable_redis_names_the_url_and_the_fix(app, env, spawn, tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/0"
    down = {**env, "CONVEYOR_QUEUE_URL": url}
    for args in (["queue", "pressure"], ["db", "init"]):
        out = subprocess.run([sys.executable, "-m", "conveyor", *args], check=False, capture_output=True,
                             text=True, env=subprocess_env(down), cwd=tmp_path, timeout=60)
        assert out.returncode != 0, args
        assert url in out.stderr and "start Redis" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
    # a worker waits for its queue, saying why, and stops cleanly on SIGTERM
    w = spawn.run("worker", env=down, log="waiting")
    wait_until(lambda: "start Redis" in spawn.output("waiting"), what="the worker to report the unreachable queue")
    w.send_signal(signal.SIGTERM)
    assert w.wait(30) == 0
    assert url in spawn.output("waiting") and "Traceback" not in spawn.output("waiting")


def test_bad_redis_url_is_a_config_error():
    from conveyor.errors import ConfigError
    from conveyor.queue import open_queue
    with pytest.raises(ConfigError, match="not a valid Redis URL"):
        open_queue("redis://:6379:x/notadb")


def test_submit_is_refused_past_the_pressure_threshold(app):
    strict = Conveyor(app.settings.with_(pressure_max_length=5), engine=app.engine, queue=app.queue,
                      plugins=app.plugins)
    strict.submit_many([JobSpec("conveyor.echo", {"i": i}) for i in range(5)])
    run_until_empty(Dispatcher(app.store, app.queue))
    with pytest.raises(QueuePressure) as exc:
        strict.submit("conveyor.echo", {})
    assert exc.value.retry_after_s > 0 and exc.value.code == "queue_pressure"
    app.queue.read("c", 5)
    assert app.queue.pressure().pending == 5


def test_pressure_lag_is_null_not_zero_when_redis_cannot_tell(rqueue):
    ids = rqueue.publish([Message(f"j{i}", 0, {"job_id": f"j{i}"}) for i in range(5)])
    rqueue.read("c", 1)
    p = rqueue.pressure()
    assert (p.length, p.pending, p.lag, p.oldest_age_source, p.approx) == (5, 1, 4, "pending", False)
    # deleting an undelivered entry leaves Redis unable to count the lag
    rqueue.client.xdel(rqueue.stream, ids[3])
    p = rqueue.pressure()
    assert p.lag is None and p.approx is True
    assert json.loads(json.dumps(p.as_dict()))["lag"] is None


def test_queue_pressure_command_prints_one_json_line(app, env, tmp_path):
    app.submit_many([JobSpec("conveyor.echo", {}) for _ in range(3)])
    run_until_empty(Dispatcher(app.store, app.queue))
    out = subprocess.run([sys.executable, "-m", "conveyor", "queue", "pressure"], check=False, capture_output=True,
                         text=True, env=subprocess_env(env), cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["length"] == 3 and data["pending"] == 0 and data["oldest_age_source"] == "undelivered"


def test_priority_bands_route_and_read_high_first(rqueue):
    rqueue.publish([Message("low", -5, {}), Message("normal", 0, {}), Message("high", 7, {})])
    assert [rqueue.client.xlen(k) for k in rqueue.keys] == [1, 1, 1]
    got = rqueue.read("c", 3)
    assert [e.job_id for e in got] == ["high", "normal", "low"]
    assert got[0].entry_id.startswith("hi:") and got[2].entry_id.startswith("lo:")
    assert rqueue.ack([e.entry_id for e in got]) == 3


def test_touch_never_steals_a_peers_entry(rqueue):
    rqueue.publish([Message("j", 0, {})])
    (e,) = rqueue.read("owner", 1)
    rqueue.touch("someone-else", [e.entry_id])
    (info,) = rqueue.client.xpending_range(rqueue.stream, rqueue.group, min="-", max="+", count=10)
    assert info["consumer"] == "owner"


def test_redis_flushed_under_a_running_deployment_recovers(app):
    """Redis restarted without persistence: the group is recreated and repair republishes what was lost."""
    ids = app.submit_many([JobSpec("conveyor.echo", {"i": i}) for i in range(6)])
    run_until_empty(Dispatcher(app.store, app.queue))
    app.queue.delete_streams()
    sched = Scheduler(app, name="repairer")
    with Loops(Dispatcher(app.store, app.queue), Worker(app, name="W", concurrency=2, block_ms=100), sched):
        wait_until(lambda: finished(app, ids), what="jobs lost with the stream to be repaired and run")
    assert all(app.get(i).status.value == "succeeded" for i in ids)
    assert all(actions(app, i).count("republished") == 1 for i in ids)


def test_reclaim_reports_trimmed_pending_ids_as_deleted_and_never_returns_them(rqueue):
    ids = rqueue.publish([Message(f"j{i}", 0, {"job_id": f"j{i}"}) for i in range(3)])
    rqueue.read("dead", 3)
    rqueue.trim(0)
    time.sleep(0.1)
    r = rqueue.reclaim("peer", min_idle_ms=50)
    assert r.entries == [] and sorted(r.deleted) == sorted(ids)
    assert rqueue.pressure().pending == 0 and rqueue.held(ids) == set()
