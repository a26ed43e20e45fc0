"""Jobs over real HTTP on SQLite and PostgreSQL: submit, run, read, list, cancel, retry, refusals."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from api_support import Server, auth, make_app, token

from conveyor.api.app import create_app
from conveyor.errors import WaitTimeout


def _error(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "detail"}, body
    assert body["error"]["code"] == code, body
    assert "Traceback" not in resp.text
    return body["error"]


def test_submit_runs_on_a_worker_and_reads_back_succeeded(http, server, worker, api_app):
    r = http.post("/jobs", json={"kind": "conveyor.echo", "payload": {"hello": "world"}, "priority": 5})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] in ("queued", "running", "succeeded")  # the worker is quick
    assert job["tenant_id"] == "default" and job["priority"] == 5
    assert r.headers["location"] == f"/api/v1/jobs/{job['id']}"
    done = api_app.wait(job["id"], timeout=60)
    assert done.status.value == "succeeded"
    got = http.get(f"/jobs/{job['id']}").json()
    assert got["status"] == "succeeded" and got["result"] == {"hello": "world"} and got["attempt_id"] == 1
    actions = [e["action"] for e in got["events"]]
    # the log is in id order, the order SSE resumes in; a quick worker's claim may take its id before the
    # dispatcher inserts its own event (stamped before it published to the queue)
    assert actions[0] == "submitted" and actions[-1] == "succeeded"
    assert sorted(actions[1:3]) == ["claimed", "dispatched"] and len(actions) == 4
    assert got["diagnostics"] is None
    # everything `conveyor jobs show --json` has, for an admin; less for a plain user
    shown = {**done.as_dict(), "events": api_app.events(job["id"])}
    with httpx.Client(base_url=server + "/api/v1", headers=auth(token("root", admin=True))) as admin:
        full = admin.get(f"/jobs/{job['id']}").json()
    assert set(shown) <= set(full)
    assert full["events"][2]["payload"]["consumer"] and "consumer" not in got["events"][2]["payload"]
    assert "lease_owner" in full and "lease_owner" not in got
    assert http.get(f"/jobs/{job['id']}/events").json()["items"] == got["events"]


def test_the_submit_answer_is_the_job_as_stored(http, server):
    """The 201 body is built from the row as written, not read back: it must match a read field for field."""
    body = {"kind": "conveyor.sleep", "payload": {"s": "ünï\u2603", "n": [1, 2.5, None]}, "priority": -3,
            "max_attempts": 7, "file_id": "f-1", "run_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
            "trace_id": "t" * 32}
    for headers in ({}, {"Idempotency-Key": "same-answer"}):
        r = http.post("/jobs", json=body, headers=headers)
        assert r.status_code == 201, r.text
        got = http.get(r.headers["location"].removeprefix("/api/v1")).json()
        assert {k: got[k] for k in r.json()} == r.json()
    replay = http.post("/jobs", json=body, headers={"Idempotency-Key": "same-answer"})
    assert replay.status_code == 200 and replay.json() == r.json() and replay.headers["idempotent-replayed"] == "true"


def test_list_is_newest_first_and_pages_with_an_opaque_cursor(http):
    ids = []
    for i in range(7):
        ids.append(http.post("/jobs", json={"kind": "conveyor.echo" if i % 2 else "conveyor.sleep",
                                            "payload": {"i": i}}).json()["id"])
        time.sleep(0.003)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = http.get("/jobs", params=params).json()
        seen += [j["id"] for j in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["items"]) == 3
    assert pages == 3 and seen == ids[::-1]
    echo = http.get("/jobs", params={"kind": "conveyor.echo"}).json()["items"]
    assert [j["id"] for j in echo] == [ids[5], ids[3], ids[1]]
    assert http.get("/jobs", params={"status": "succeeded"}).json() == {"items": [], "next_cursor": None}
    _error(http.get("/jobs", params={"cursor": "not-a-cursor"}), 422, "invalid_request")
    _error(http.get("/jobs", params={"status": "exploded"}), 422, "invalid_request")
    _error(http.get("/jobs", params={"limit": 0}), 422, "invalid_request")


def test_cancel_then_cancel_again_is_a_conflict(http):
    job = http.post("/jobs", json={"kind": "conveyor.sleep", "payload": {"seconds": 30}}).json()
    r = http.post(f"/jobs/{job['id']}/cancel", json={"reason": "not needed"})
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["last_error"] == "not needed"
    err = _error(http.post(f"/jobs/{job['id']}/cancel"), 409, "illegal_transition")
    assert err["detail"] == {"status": "cancelled", "target": "cancelled"}
    _error(http.post(f"/jobs/{job['id']}/cancel", json={"reason": "\x1b[31m"}), 422, "invalid_job")


def test_retry_runs_a_failed_job_again_with_a_bigger_attempt_id(http, worker, api_app):
    job = http.post("/jobs", json={"kind": "test.flaky", "payload": {"succeed_on": 2}, "max_attempts": 1}).json()
    failed = api_app.wait(job["id"], timeout=60)
    assert failed.status.value == "failed" and failed.attempt_id == 1 and failed.error_code == "connector_failed"
    got = http.get(f"/jobs/{job['id']}").json()
    assert got["diagnostics"]["cause"].startswith("connector_failed") and got["diagnostics"]["next_step"]
    r = http.post(f"/jobs/{job['id']}/retry")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "queued" and r.json()["attempts"] == 0 and r.json()["error_code"] is None
    done = api_app.wait(job["id"], timeout=60)
    assert done.status.value == "succeeded" and done.attempt_id == 2 and done.result == {"attempt": 2}
    assert done.error_history[0]["code"] == "connector_failed"
    actions = [e["action"] for e in http.get(f"/jobs/{job['id']}/events").json()["items"]]
    assert actions.count("retried") == 1 and actions[-1] == "succeeded" and actions.count("dispatched") == 2
    _error(http.post(f"/jobs/{job['id']}/retry"), 409, "illegal_transition")


def test_a_cancelled_job_can_be_retried_and_a_stale_result_of_its_old_attempt_is_fenced(http, api_app):
    from conveyor import store
    job_id = http.post("/jobs", json={"kind": "conveyor.echo", "payload": 1}).json()["id"]
    from conveyor.outbox import Dispatcher, run_until_empty
    run_until_empty(Dispatcher(api_app.store, api_app.queue))
    claimed, _, _ = store.claim(api_app.engine, [("e1", job_id)], "w-old", 30)
    assert claimed and claimed[0].job.attempt_id == 1
    http.post(f"/jobs/{job_id}/cancel")
    assert http.post(f"/jobs/{job_id}/retry").json()["status"] == "queued"
    # the old attempt's result arrives late: it is discarded, the job stays queued for a new attempt
    done, _ = store.finalize(api_app.engine, [store.Outcome(job_id, 1, "e1", ok=True, result="late")])
    assert done[0].action == "stale_result" and api_app.get(job_id).status.value == "queued"


def test_idempotency_key_returns_the_same_job_per_tenant(http, server):
    first = http.post("/jobs", json={"kind": "conveyor.echo"}, headers={"Idempotency-Key": "order-42"})
    again = http.post("/jobs", json={"kind": "conveyor.echo"}, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true" and again.json()["id"] == first.json()["id"]
    other = httpx.post(server + "/api/v1/jobs", json={"kind": "conveyor.echo"},
                       headers=auth(token("bob", tenant="t2"), **{"Idempotency-Key": "order-42"}))
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert other.json()["tenant_id"] == "t2"


@pytest.mark.parametrize("body, code, field", [
    ({"payload": {}}, "invalid_request", None),
    ({"kind": "no spaces allowed"}, "invalid_request", None),
    ({"kind": "conveyor.echo", "priority": 10**30}, "invalid_request", None),
    ({"kind": "conveyor.echo", "priority": True}, "invalid_request", None),
    ({"kind": "conveyor.echo", "max_attempts": 0}, "invalid_request", None),
    ({"kind": "conveyor.echo", "surprise": 1}, "invalid_request", None),
    ({"kind": "conveyor.echo", "run_at": "2999-01-01T00:00:00Z"}, "invalid_job", "run_at"),
    ({"kind": "conveyor.echo", "file_id": "a\x00b"}, "invalid_job", "file_id"),
])
def test_bad_fields_are_422_with_the_error_shape(http, body, code, field):
    err = _error(http.post("/jobs", json=body), 422, code)
    if field:
        assert err["detail"] == {"field": field}
    else:
        assert err["detail"] and all({"loc", "msg", "type"} <= set(d) for d in err["detail"])
    assert http.get("/jobs").json()["items"] == []


@pytest.mark.parametrize("raw, ctype", [
    (b'{"kind": "conveyor.echo",', "application/json"),
    (b'{"kind": "conveyor.echo", "payload": NaN}', "application/json"),
    (b'{"kind": "conveyor.echo", "payload": ' + b"[" * 5000 + b"]" * 5000 + b"}", "application/json"),
    (b'{"kind": "conveyor.\xff"}', "application/json"),
    (b'{"kind": "conveyor.echo", "payload": 1' + b"0" * 5000 + b"}", "application/json"),
    (b"kind=conveyor.echo", "application/x-www-form-urlencoded"),
])
def test_malformed_bodies_are_422_never_500(http, raw, ctype):
    r = http.post("/jobs", content=raw, headers={"content-type": ctype})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] in ("invalid_request", "invalid_payload")
    assert http.get("/jobs").json()["items"] == []


@pytest.fixture
def small_server(api_env):
    app = make_app(api_env, max_payload_bytes=1000)
    app.init_db()
    with Server(create_app(app)) as s:
        yield s.url
    app.close()
    app.engine.dispose()


def test_oversize_payload_and_body_are_413(small_server):
    h = auth(token())
    url = small_server + "/api/v1/jobs"
    err = _error(httpx.post(url, json={"kind": "conveyor.echo", "payload": "x" * 2000}, headers=h), 413,
                 "payload_too_large")
    assert err["detail"] == {"field": "payload"}
    limit = 1000 + 65536
    big = json.dumps({"kind": "conveyor.echo", "payload": "x" * (limit + 10)}).encode()
    err = _error(httpx.post(url, content=big, headers={**h, "content-type": "application/json"}), 413,
                 "request_too_large")
    assert err["detail"] == {"limit": limit}

    def chunks():  # no Content-Length: the limit is counted as the body arrives
        for _ in range(100):
            yield b"x" * 1000

    _error(httpx.post(url, content=chunks(), headers={**h, "content-type": "application/json"}), 413,
           "request_too_large")
    assert httpx.get(small_server + "/api/v1/jobs", headers=h).json()["items"] == []


def test_unknown_and_implausible_ids_are_404(http):
    for job_id in ("0d0e6c1e-0000-4000-8000-000000000000", "x" * 300, "%00", "caf%C3%A9"):
        _error(http.get(f"/jobs/{job_id}"), 404, "not_found")
        _error(http.post(f"/jobs/{job_id}/cancel"), 404, "not_found")
        _error(http.post(f"/jobs/{job_id}/retry"), 404, "not_found")
        _error(http.get(f"/jobs/{job_id}/events"), 404, "not_found")
    _error(http.get("/no/such/route"), 404, "not_found")
    _error(http.delete("/jobs"), 405, "invalid_request")


def test_conveyor_wait_returns_the_final_job_or_times_out(api_app, worker):
    job_id = api_app.submit("conveyor.sleep", {"seconds": 30})
    with pytest.raises(WaitTimeout) as exc:
        api_app.wait(job_id, timeout=0.3)
    assert exc.value.job_id == job_id and exc.value.status in ("queued", "running")
    api_app.cancel(job_id)
    assert api_app.wait(job_id, timeout=5).status.value == "cancelled"
    quick = api_app.submit("conveyor.echo", {"n": 1})
    assert api_app.wait(quick, timeout=60).result == {"n": 1}


def test_a_kinds_public_view_shapes_what_non_admins_see_and_a_broken_one_fails_closed(caplog):
    from datetime import datetime

    from conveyor.api.views import job_view
    from conveyor.kinds import JobKind
    from conveyor.models import Job, JobStatus
    from conveyor.registry import Registry

    kinds: Registry[JobKind] = Registry("job kinds")
    kinds.current_plugin = "conveyor_shapes"
    kinds.add(JobKind("shapes.hide", lambda ctx: None,
                      public_view=lambda j: {**j, "result": {"shown": j["result"]["shown"]}}))
    kinds.add(JobKind("shapes.broken", lambda ctx: None, public_view=lambda j: 1 / 0))  # type: ignore[arg-type,return-value]
    now = datetime(2026, 1, 1)

    def job(kind: str) -> Job:
        return Job(id="j1", kind=kind, status=JobStatus.SUCCEEDED, tenant_id="t", org_id=None, priority=0,
                   payload={}, result={"shown": 1, "key": "jobs/j1/secret.bin"}, error_code=None, last_error=None,
                   error_history=[], attempt_id=1, attempts=1, max_attempts=3, lease_owner="w1",
                   lease_expires_at=None, next_attempt_at=None, idempotency_key=None, file_id=None, trace_id=None,
                   created_at=now, updated_at=now, started_at=now, finished_at=now)

    assert job_view(job("shapes.hide"), False, kinds)["result"] == {"shown": 1}
    assert job_view(job("shapes.hide"), True, kinds)["result"] == {"shown": 1, "key": "jobs/j1/secret.bin"}
    assert job_view(job("shapes.other"), False, kinds)["result"] == {"shown": 1, "key": "jobs/j1/secret.bin"}
    broken = job_view(job("shapes.broken"), False, kinds)
    assert broken["result"] is None and broken["id"] == "j1"
    assert "conveyor_shapes" in caplog.text and "public_view failed" in caplog.text
