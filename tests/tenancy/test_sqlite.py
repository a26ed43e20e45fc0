"""db-per-tenant on SQLite files: the control database holds the sql queue; `conveyor run` serves every tenant."""

from __future__ import annotations

import threading
import time

import pytest
from tenancy_support import TESTS, Server, cli, cli_json, client, sse_history, wait_final

from conveyor.api.app import create_app
from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.plugins import load_plugins
from conveyor.queue import Message
from conveyor.runner import Runner


@pytest.fixture
def deployment(tmp_path):
    env = {
        "CONVEYOR_DB_URL": f"sqlite:///{tmp_path}/control.db",
        "CONVEYOR_TENANCY": "db-per-tenant",
        "CONVEYOR_DB_URL_TEMPLATE": f"sqlite:///{tmp_path}/tenants/{{tenant}}.db",
        "CONVEYOR_QUEUE_URL": "sql",
        "CONVEYOR_STORAGE_URL": f"file://{tmp_path}/data",
        "CONVEYOR_LEASE_SECONDS": "3",
        "CONVEYOR_RECLAIM_GRACE_SECONDS": "1",
        "CONVEYOR_REPAIR_INTERVAL_SECONDS": "0.5",
        "CONVEYOR_PLUGINS": "conveyor_testkinds",
        "CONVEYOR_JWT_SECRET": "s3cr3t-for-tenancy-tests-0123456789abcdef",
        "CONVEYOR_SSE_POLL_SECONDS": "0.05",
        "CONVEYOR_CONFIG": "",
        "PYTHONPATH": str(TESTS / "plugins"),
    }
    init = cli(env, "db", "init", cwd=tmp_path).stdout
    adds = [cli(env, "tenants", "add", t, cwd=tmp_path).stdout for t in ("acme", "globex")]
    settings = load_settings(env=env)
    app = Conveyor(settings, plugins=load_plugins(settings.plugins))
    yield env, tmp_path, app, init, adds
    app.close()
    app.engine.dispose()


def test_two_tenants_on_sqlite_files_served_by_one_runner(deployment):
    env, tmp, app, init, adds = deployment
    assert init.startswith("control database: applied jobs 0001 (") and "control c0001 (" in init
    assert adds[0].startswith(f"tenant acme: database sqlite:///{tmp}/tenants/acme.db created, applied jobs 0001 (")
    assert sorted(p.name for p in (tmp / "tenants").iterdir() if p.suffix == ".db") == ["acme.db", "globex.db"]
    assert [r["tenant"] for r in cli_json(env, "tenants", "list", "--json", cwd=tmp)] == ["acme", "globex"]
    assert app.queue.transactional is False  # its table is in the control database, apart from the jobs
    runner = Runner(app, concurrency=2)
    worker_thread = threading.Thread(target=runner.run, kwargs={"install_signals": False}, daemon=True)
    worker_thread.start()
    try:
        with Server(create_app(app)) as server:
            a, b = client(server.url, "a", tenant="acme"), client(server.url, "b", tenant="globex")
            x = client(server.url, "x", tenant="initech")
            try:
                t0 = time.monotonic()
                ja = [a.post("/jobs", json={"kind": "conveyor.echo", "payload": i}).json()["id"] for i in range(3)]
                jb = [b.post("/jobs", json={"kind": "conveyor.echo", "payload": -i}).json()["id"] for i in range(3)]
                assert [wait_final(a, j)["result"] for j in ja] == [0, 1, 2]
                assert [wait_final(b, j)["result"] for j in jb] == [0, -1, -2]
                print(f"6 jobs over 2 SQLite databases: {time.monotonic() - t0:.2f}s")
                assert {j["id"] for j in a.get("/jobs").json()["items"]} == set(ja)
                assert all(a.get(f"/jobs/{j}").status_code == 404 for j in jb)
                assert all(b.get(f"/jobs/{j}/events").status_code == 404 for j in ja)
                assert {e["job_id"] for e in sse_history(b, timeout=1.0)} == set(jb)
                r = x.post("/jobs", json={"kind": "conveyor.echo"})
                assert r.status_code == 403 and "has no database" in r.json()["error"]["message"]
                # org is a column here, not a database: the org header narrows inside the tenant's database
                o = a.post("/jobs", json={"kind": "conveyor.echo"}, headers={"x-org-id": "sales"}).json()
                assert o["org_id"] == "sales" and wait_final(a, o["id"])["status"] == "succeeded"
                assert [j["id"] for j in a.get("/jobs", headers={"x-org-id": "sales"}).json()["items"]] == [o["id"]]
            finally:
                a.close()
                b.close()
                x.close()
        # a queue entry naming no tenant database is acknowledged unrun, and nothing else is disturbed
        before = runner.worker.stats.skipped
        app.queue.publish([Message("00000000-0000-4000-8000-000000000000", 0,
                                   {"tenant_id": "../acme", "org_id": ""}),
                           Message("00000000-0000-4000-8000-000000000001", 0, {"tenant_id": "initech"})])
        deadline = time.monotonic() + 10
        while runner.worker.stats.skipped < before + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.worker.stats.skipped == before + 2
        assert app.queue.pressure().length == 0
        job_id = app.for_tenant("globex").submit("conveyor.echo", "after", tenant="globex")
        assert app.for_tenant("globex").wait(job_id, timeout=20).result == "after"
    finally:
        runner.stop()
        worker_thread.join(30)
    assert runner.worker.stats.succeeded >= 8 and runner.worker.stats.failed == 0
    # every job row is in its tenant's file; the control database has none
    from sqlalchemy import func, select

    from conveyor.schema import jobs
    for name, n in (("control", 0),):
        with app.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(jobs)).scalar() == n, name
    with app.for_tenant("acme").engine.connect() as conn:
        assert set(conn.execute(select(jobs.c.tenant_id).distinct()).scalars()) == {"acme"}
    report = cli_json(env, "diagnose", ja[0], "--tenant", "acme", "--json", cwd=tmp)
    assert report["status"] == "succeeded"
    r = cli(env, "diagnose", ja[0], "--tenant", "globex", cwd=tmp, check=False)
    assert r.returncode == 1 and "no job" in r.stderr
    doctor = cli(env, "doctor", "--json", cwd=tmp, check=False)
    checks = {c["check"]: c for c in __import__("json").loads(doctor.stdout)}
    assert checks["tenant databases"]["ok"] and "2 registered" in checks["tenant databases"]["detail"]


def test_tenants_remove_stops_serving_a_tenant_and_keeps_its_data(deployment):
    env, tmp_path, app, _, _ = deployment
    with Server(create_app(app)) as srv, client(srv.url, "amy", tenant="acme") as acme:
        job = acme.post("/jobs", json={"kind": "conveyor.echo", "payload": {"n": 1}}).json()
        # a queued job would wait for good once its database is unregistered
        refused = cli(env, "tenants", "remove", "acme", cwd=tmp_path, check=False)
        assert refused.returncode == 2 and "1 queued or running job(s)" in refused.stderr, refused
        assert "Traceback" not in refused.stderr
        assert acme.get(f"/jobs/{job['id']}").status_code == 200
        removed = cli_json(env, "tenants", "remove", "acme", "--force", "--json", cwd=tmp_path)
        assert removed["removed"] is True and removed["tenant"] == "acme"
        assert [r["tenant"] for r in cli_json(env, "tenants", "list", "--json", cwd=tmp_path)] == ["globex"]
        # this API process held acme's engine: it stops serving it once its registry view is renewed
        deadline = time.monotonic() + 15
        while (r := acme.get(f"/jobs/{job['id']}")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
        again = cli(env, "tenants", "remove", "acme", cwd=tmp_path, check=False)
        assert again.returncode != 0 and "not registered" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / "tenants" / "acme.db").exists()  # the data stays
    cli(env, "tenants", "add", "acme", cwd=tmp_path)
    with Server(create_app(app)) as srv, client(srv.url, "amy", tenant="acme") as acme:
        assert acme.get(f"/jobs/{job['id']}").status_code == 200  # added back: the same database, the same job


def test_health_reports_the_tenant_databases_this_api_serves(deployment):
    _, tmp_path, app, _, _ = deployment
    with Server(create_app(app)) as srv, client(srv.url, "amy", tenant="acme") as acme:
        assert acme.post("/jobs", json={"kind": "conveyor.echo", "payload": {}}).status_code == 201  # acme in use
        health = acme.get("/health").json()
        assert health["status"] == "ok" and health["checks"]["tenant_databases"]["ok"]
        assert "2 registered" in health["checks"]["tenant_databases"]["detail"]
        app.tenancy.app_for(app.tenancy.key("acme"), check=False).engine.dispose()
        (tmp_path / "tenants").rename(tmp_path / "tenants.gone")  # acme's database file is gone
        try:
            r = acme.get("/health")
            assert r.status_code == 503 and not r.json()["checks"]["tenant_databases"]["ok"]
            assert "acme" not in r.text  # /health answers anyone: it names no tenant
        finally:
            (tmp_path / "tenants.gone").rename(tmp_path / "tenants")
        assert acme.get("/health").status_code == 200
