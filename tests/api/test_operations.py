"""Health, metrics, quotas and backpressure, plugin routers, and errors that never leak a traceback."""

from __future__ import annotations

import httpx
import pytest
from api_support import Server, auth, make_app, token
from conveyor_api_testroutes import CRASH_SECRET

from conveyor.api.app import create_app
from conveyor.api.health import is_loopback, may_read_metrics


def test_health_reports_each_backend(server):
    r = httpx.get(server + "/api/v1/health")  # no token needed
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok" and set(body["checks"]) == {"database", "queue", "storage"}
    assert all(c["ok"] for c in body["checks"].values())
    assert body["plugins_failed"] == ["conveyor_api_brokenroutes"]


@pytest.mark.parametrize("url", ["sqlite:////nonexistent-dir/nowhere/conveyor.db",
                                 "postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2"])
def test_health_is_503_when_the_database_points_nowhere(api_env, url):
    app = make_app({**api_env, "CONVEYOR_DB_URL": url})
    with Server(create_app(app)) as s:  # the API starts anyway
        r = httpx.get(s.url + "/api/v1/health", timeout=30)
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["status"] == "unavailable" and not body["checks"]["database"]["ok"]
        assert body["checks"]["storage"]["ok"]
        assert "nowhere" not in r.text  # no connection details for anonymous callers
        r = httpx.get(s.url + "/api/v1/jobs", headers=auth(token()), timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable" and r.headers["retry-after"]
    app.close()


def test_loopback_check():
    for host in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        assert is_loopback(host)
    for host in ("192.0.2.7", "10.0.0.1", "::ffff:10.0.0.1", "2001:db8::1", "testclient", "", None, "localhost"):
        assert not is_loopback(host)
    assert may_read_metrics("127.0.0.1", None, "")
    assert not may_read_metrics("203.0.113.9", None, "tok")
    assert not may_read_metrics("203.0.113.9", "Bearer nope", "tok")
    assert not may_read_metrics("203.0.113.9", "Bearer tok", "")
    assert may_read_metrics("203.0.113.9", "Bearer tok", "tok")


def test_metrics_are_for_loopback_clients_or_the_metrics_token(api_env):
    app = make_app(api_env, metrics_token="scrape-me-please")
    app.init_db()
    api = create_app(app)
    with Server(api) as local:
        r = httpx.get(local.url + "/api/v1/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert "conveyor_api_requests_total" in r.text and "conveyor_job_events_total" in r.text
        httpx.get(local.url + "/api/v1/jobs/some-id", headers=auth(token()))
        r = httpx.get(local.url + "/api/v1/metrics")
        assert 'route="/api/v1/jobs/{job_id}",status="404"' in r.text and "some-id" not in r.text
    # behind a proxy, the client address comes from X-Forwarded-For: a remote client, not loopback
    with Server(api, proxy_headers=True, forwarded_allow_ips="*") as proxied:
        remote = {"X-Forwarded-For": "203.0.113.9"}
        r = httpx.get(proxied.url + "/api/v1/metrics", headers=remote)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert httpx.get(proxied.url + "/api/v1/metrics",
                         headers={**remote, "Authorization": "Bearer wrong"}).status_code == 403
        assert httpx.get(proxied.url + "/api/v1/metrics", headers={**remote, **auth(token())}).status_code == 403
        r = httpx.get(proxied.url + "/api/v1/metrics", headers={**remote, **auth("scrape-me-please")})
        assert r.status_code == 200 and "conveyor_api_requests_total" in r.text
    app.close()
    app.engine.dispose()


def test_tenant_quota_is_429_with_retry_after(api_env):
    app = make_app(api_env, tenant_max_active_jobs=2)
    app.init_db()
    with Server(create_app(app)) as s:
        a = httpx.Client(base_url=s.url + "/api/v1", headers=auth(token("a", tenant="a")))
        for _ in range(2):
            assert a.post("/jobs", json={"kind": "conveyor.sleep"}).status_code == 201
        r = a.post("/jobs", json={"kind": "conveyor.sleep"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
        assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["detail"]["retry_after_s"] > 0
        assert len(a.get("/jobs").json()["items"]) == 2
        b = httpx.Client(base_url=s.url + "/api/v1", headers=auth(token("b", tenant="b")))
        assert b.post("/jobs", json={"kind": "conveyor.sleep"}).status_code == 201  # another tenant's quota
        first = a.get("/jobs").json()["items"][0]["id"]
        a.post(f"/jobs/{first}/cancel")
        assert a.post("/jobs", json={"kind": "conveyor.sleep"}).status_code == 201  # room again
        a.close()
        b.close()
    app.close()
    app.engine.dispose()


def test_queue_pressure_is_429_with_retry_after(api_env):
    from conveyor.outbox import Dispatcher, run_until_empty
    app = make_app(api_env, pressure_max_length=1)
    app.init_db()
    with Server(create_app(app)) as s:
        c = httpx.Client(base_url=s.url + "/api/v1", headers=auth(token()))
        assert c.post("/jobs", json={"kind": "conveyor.sleep"}).status_code == 201
        run_until_empty(Dispatcher(app.store, app.queue))
        r = c.post("/jobs", json={"kind": "conveyor.sleep"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "queue_pressure"
        assert int(r.headers["retry-after"]) >= 1
        c.close()
    app.close()
    app.engine.dispose()


def test_plugin_routes_are_mounted_and_a_broken_plugin_is_reported(http, server, caplog):
    r = http.get("/testroutes/whoami")
    assert r.status_code == 200 and r.json()["subject"] == "alice" and r.json()["tenant"] == "default"
    assert r.json()["kinds"] > 3
    r = httpx.get(server + "/api/v1/testroutes/whoami")  # plugin routes require an identity
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = http.get("/testroutes/teapot")
    assert r.status_code == 418 and r.json()["error"] == {"code": "invalid_request", "message": "a teapot",
                                                          "detail": {"short": True}}
    assert http.get("/broken/half").status_code == 404  # none of the broken plugin's routes
    assert http.post("/jobs", json={"kind": "conveyor.echo"}).status_code == 201  # the rest works
    paths = httpx.get(server + "/openapi.json").json()["paths"]
    assert "/api/v1/testroutes/whoami" in paths and "/api/v1/broken/half" not in paths


def test_an_unexpected_error_is_500_internal_error_without_a_traceback(http, caplog):
    r = http.get("/testroutes/crash")
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "internal_error",
                                  "message": "an unexpected error; the server log has its traceback",
                                  "detail": None}}
    assert CRASH_SECRET not in r.text and "Traceback" not in r.text
    assert any(CRASH_SECRET in (rec.exc_text or str(rec.exc_info)) for rec in caplog.records
               if rec.name == "conveyor.api")


def test_docs_and_openapi_are_served(server):
    spec = httpx.get(server + "/openapi.json").json()
    assert spec["info"]["title"] == "Conveyor"
    for path in ("/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/cancel",
                 "/api/v1/jobs/{job_id}/retry", "/api/v1/jobs/{job_id}/events", "/api/v1/jobs/{job_id}/events/stream",
                 "/api/v1/events/stream", "/api/v1/health", "/api/v1/metrics"):
        assert path in spec["paths"], path
    assert "bearerAuth" in str(spec["components"]["securitySchemes"]) or spec["components"]["securitySchemes"]
    r = httpx.get(server + "/docs")
    assert r.status_code == 200 and "swagger" in r.text.lower()
