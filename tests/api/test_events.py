"""Server-Sent Events: every state change in order, resumable with Last-Event-ID, scoped to the tenant."""

from __future__ import annotations

import json
import threading
import time

import httpx
from api_support import auth, sse_events, token

from conveyor.api.events import Feed
from conveyor.store import Scope


def test_a_job_stream_delivers_every_state_change_in_order_and_resumes(http, api_app, pipeline_factory):
    job_id = http.post("/jobs", json={"kind": "test.flaky", "payload": {"succeed_on": 2}}).json()["id"]
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(sse_events(http, f"/jobs/{job_id}/events/stream")))
    reader.start()
    time.sleep(0.3)  # the stream is open and waiting before anything runs
    with pipeline_factory():
        reader.join(timeout=60)
    assert not reader.is_alive()
    *changes, end = got
    assert end[0] == "end" and json.loads(end[2]) == {"job_id": job_id, "status": "succeeded"}
    recorded = http.get(f"/jobs/{job_id}/events").json()["items"]
    assert [json.loads(d) for _, _, d in changes] == recorded
    assert [int(i) for _, i, _ in changes] == [e["id"] for e in recorded] == sorted(e["id"] for e in recorded)
    # a quick worker's claim may take a lower event id than the dispatcher's stamp it follows (the
    # change log is in commit order): within each attempt the two may come either way round
    actions = [e["action"] for e in recorded]
    assert actions[0] == "submitted" and actions[-1] == "succeeded" and len(actions) == 7, actions
    assert sorted(actions[1:3]) == sorted(actions[4:6]) == ["claimed", "dispatched"], actions
    assert actions[3] == "retry_scheduled", actions
    # resume after the third event: the rest, then the end
    third = recorded[2]["id"]
    rest = sse_events(http, f"/jobs/{job_id}/events/stream", headers={"Last-Event-ID": str(third)})
    assert [int(i) for e, i, _ in rest if e == "message"] == [e["id"] for e in recorded[3:]]
    assert rest[-1][0] == "end"
    assert sse_events(http, f"/jobs/{job_id}/events/stream?after={recorded[-1]['id']}")[0][0] == "end"


def test_the_global_stream_shows_only_the_tenant_s_events_from_now_or_after_an_id(server, api_app):
    alice = httpx.Client(base_url=server + "/api/v1", headers=auth(token("alice", tenant="a")), timeout=30)
    bob = httpx.Client(base_url=server + "/api/v1", headers=auth(token("bob", tenant="b")), timeout=30)
    root = httpx.Client(base_url=server + "/api/v1", headers=auth(token("root", tenant="*", admin=True)))
    a_job = alice.post("/jobs", json={"kind": "conveyor.echo"}).json()["id"]
    b_job = bob.post("/jobs", json={"kind": "conveyor.echo"}).json()["id"]
    history = sse_events(alice, "/events/stream", headers={"Last-Event-ID": "0"}, limit=1, timeout=5)
    assert [json.loads(d)["job_id"] for e, _, d in history] == [a_job]
    everyone = sse_events(root, "/events/stream", headers={"Last-Event-ID": "0"}, limit=2, timeout=5)
    assert {json.loads(d)["job_id"] for _, _, d in everyone} == {a_job, b_job}
    # from now: a stream opened before the next submits sees only its tenant's new job
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(sse_events(bob, "/events/stream", limit=1, timeout=10)))
    reader.start()
    time.sleep(0.3)
    alice.post("/jobs", json={"kind": "conveyor.echo"})
    b2 = bob.post("/jobs", json={"kind": "conveyor.echo"}).json()["id"]
    reader.join(timeout=15)
    assert [json.loads(d)["job_id"] for _, _, d in got] == [b2]
    for c in (alice, bob, root):
        c.close()


def test_heartbeat_comments_keep_an_idle_stream_open(http):
    lines = []
    with http.stream("GET", "/events/stream") as resp:
        assert resp.status_code == 200
        start = time.monotonic()
        for line in resp.iter_lines():
            lines.append(line)
            if line.startswith(":") or time.monotonic() - start > 5:
                break
    assert lines[0] == "retry: 2000" and any(line == ": keep-alive" for line in lines)


def test_bad_last_event_id_is_422(http):
    job_id = http.post("/jobs", json={"kind": "conveyor.echo"}).json()["id"]
    for path in ("/events/stream", f"/jobs/{job_id}/events/stream"):
        r = http.get(path, headers={"Last-Event-ID": "yesterday"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_the_feed_waits_for_an_id_that_is_not_committed_yet(engine):
    """A gap in the ids (a transaction still open) holds delivery back until it commits or ages out."""
    from sqlalchemy import insert

    from conveyor import store
    from conveyor.db import utcnow
    from conveyor.schema import events
    job_id = store.submit(engine, "conveyor.echo")  # event 1
    now = utcnow()
    with engine.begin() as conn:  # event 3 is written while event 2 "is not committed yet"
        conn.execute(insert(events), [store.event_row(job_id, 0, "dispatched", now) | {"id": 3}])
    from conveyor.jobstore import JobStore
    feed = Feed(JobStore(engine), Scope("default"), gap_wait_s=0.5)
    first = feed.poll()
    assert [e["id"] for e in first.events] == [1] and first.waiting
    with engine.begin() as conn:
        conn.execute(insert(events), [store.event_row(job_id, 0, "claimed", now) | {"id": 2}])
    assert [e["id"] for e in feed.poll().events] == [2, 3]
    with engine.begin() as conn:  # a gap that never fills is passed once the next event is old enough
        conn.execute(insert(events), [store.event_row(job_id, 0, "succeeded", now) | {"id": 5}])
    assert feed.poll().events == []
    time.sleep(0.6)
    assert [e["id"] for e in feed.poll().events] == [5]
