"""db-per-tenant-org on PostgreSQL: two tenants x two orgs, one worker, one dispatcher and one scheduler process.

The databases are created for this module by `conveyor tenants add` (subprocesses) and dropped
at the end; the queue is the real Redis; jobs come in over HTTP (uvicorn + httpx).
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update
from tenancy_support import (
    TESTS,
    Process,
    Server,
    cli,
    cli_json,
    client,
    create_database,
    databases,
    delete_streams,
    drop_databases,
    new_prefix,
    pg_rows,
    pg_template,
    pg_url,
    sse_history,
    wait_final,
)

from conveyor.api.app import create_app
from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.db import utcnow
from conveyor.plugins import load_plugins
from conveyor.schema import outbox
from conveyor.store import JobSpec, submit_many

KEYS = [("acme", "sales"), ("acme", "support"), ("globex", "sales"), ("globex", "support")]


class Fleet:
    """What the module fixture built: settings, databases, processes, the control app and its API."""

    def __init__(self, prefix, env, cwd, outputs, procs, app, url):
        self.prefix, self.env, self.cwd, self.outputs, self.procs, self.app, self.url = (
            prefix, env, cwd, outputs, procs, app, url)

    def db_url(self, tenant: str, org: str) -> str:
        return pg_url(f"{self.prefix}__{tenant}__{org}")

    @property
    def control_url(self) -> str:
        return pg_url(f"{self.prefix}_control")

    def client(self, tenant: str, org: str | None, sub: str | None = None, **claims):
        return client(self.url, sub or f"{tenant}-{org}", tenant=tenant, org=org, **claims)

    def check_alive(self) -> None:
        for p in self.procs:
            assert p.alive(), f"{p.name} exited {p.proc.returncode}:\n{p.output()[-3000:]}"


def _env(prefix: str, tmp, redis_url: str, **more) -> dict:
    return {
        "CONVEYOR_DB_URL": pg_url(f"{prefix}_control"),
        "CONVEYOR_TENANCY": "db-per-tenant-org",
        "CONVEYOR_DB_URL_TEMPLATE": pg_template(prefix),
        "CONVEYOR_QUEUE_URL": redis_url,
        "CONVEYOR_STREAM_KEY": f"conveyor:tenancy:{prefix}",
        "CONVEYOR_STREAM_GROUP": f"conveyor:tenancy:{prefix}",
        "CONVEYOR_STORAGE_URL": f"file://{tmp}/data",
        "CONVEYOR_LEASE_SECONDS": "3",
        "CONVEYOR_RECLAIM_GRACE_SECONDS": "1",
        "CONVEYOR_REPAIR_INTERVAL_SECONDS": "0.5",
        "CONVEYOR_RETRY_BASE_SECONDS": "0.05",
        "CONVEYOR_RETRY_MAX_SECONDS": "0.2",
        "CONVEYOR_PLUGINS": "conveyor_testkinds",
        "CONVEYOR_JWT_SECRET": "s3cr3t-for-tenancy-tests-0123456789abcdef",
        "CONVEYOR_SSE_POLL_SECONDS": "0.05",
        "CONVEYOR_SSE_HEARTBEAT_SECONDS": "0.5",
        "CONVEYOR_CONFIG": "",
        "PYTHONPATH": str(TESTS / "plugins"),
        **more,
    }


def control_app(env: dict, **changes) -> Conveyor:
    settings = load_settings(env=env)
    if changes:
        settings = settings.with_(**changes)
    return Conveyor(settings, plugins=load_plugins(settings.plugins))


@pytest.fixture(scope="module")
def fleet(pg_server, redis_url, tmp_path_factory):
    prefix = new_prefix()
    tmp = tmp_path_factory.mktemp("fleet")
    env = _env(prefix, tmp, redis_url)
    procs: list[Process] = []
    app = None
    try:
        create_database(f"{prefix}_control")
        outputs = {"init": cli(env, "db", "init", cwd=tmp).stdout}
        for tenant, org in KEYS:
            outputs[f"add {tenant}/{org}"] = cli(env, "tenants", "add", tenant, "--org", org, cwd=tmp).stdout
        outputs["again"] = cli(env, "tenants", "add", "acme", "--org", "sales", cwd=tmp).stdout
        outputs["list"] = cli_json(env, "tenants", "list", "--json", cwd=tmp)
        outputs["reinit"] = cli(env, "db", "init", cwd=tmp).stdout
        procs = [Process(env, "worker", "-c", "4", "--name", "fleet-worker", cwd=tmp, name="worker"),
                 Process(env, "dispatcher", cwd=tmp, name="dispatcher"),
                 Process(env, "scheduler", "--interval", "0.5", cwd=tmp, name="scheduler")]
        app = control_app(env)
        with Server(create_app(app)) as server:
            yield Fleet(prefix, env, tmp, outputs, procs, app, server.url)
    finally:
        codes = {p.name: p.stop() for p in procs}
        if app is not None:
            app.close()
            app.engine.dispose()
        delete_streams(redis_url, f"conveyor:tenancy:{prefix}")
        dropped = drop_databases(prefix)
        assert not databases(prefix)
        print(f"exit codes {codes}; dropped {dropped}")


def test_the_cli_created_migrated_and_registered_each_tenant_database(fleet):
    out = fleet.outputs
    assert out["init"].startswith("control database: applied jobs 0001 (") and "control c0001 (" in out["init"]
    for tenant, org in KEYS:
        line = out[f"add {tenant}/{org}"]
        assert line.startswith(f"tenant {tenant}/{org}: database ") and " created, applied jobs 0001 (" in line, line
        assert "registered" in line and "***" not in line
    assert out["again"].rstrip().endswith("exists, schema up to date, already registered")
    assert [(r["tenant"], r["org"]) for r in out["list"]] == KEYS
    assert f"/{fleet.prefix}__acme__sales" in out["list"][0]["database"]
    assert out["reinit"].splitlines() == [
        "control database: schema up to date (jobs 0003, cad cad0001, control c0001)"] + [
        f"tenant {t}/{o}: schema up to date" for t, o in KEYS]
    assert databases(fleet.prefix) == sorted([f"{fleet.prefix}_control"] +
                                             [f"{fleet.prefix}__{t}__{o}" for t, o in KEYS])
    text = cli(fleet.env, "tenants", "list", cwd=fleet.cwd).stdout
    assert text.splitlines()[0].split()[0] == "acme/sales"


def test_jobs_of_each_tenant_and_org_land_in_their_own_database_and_all_finish(fleet):
    submitted: dict[tuple[str, str], list[str]] = {}
    clients = {key: fleet.client(*key) for key in KEYS}
    try:
        t0 = time.monotonic()
        for key, c in clients.items():
            submitted[key] = []
            for i in range(3):
                r = c.post("/jobs", json={"kind": "conveyor.echo", "payload": {"key": list(key), "i": i}})
                assert r.status_code == 201, r.text
                job = r.json()
                assert (job["tenant_id"], job["org_id"]) == key
                submitted[key].append(job["id"])
        for key, c in clients.items():
            for job_id in submitted[key]:
                job = wait_final(c, job_id, timeout=60)
                assert job["status"] == "succeeded" and job["result"]["key"] == list(key), job
        print(f"12 jobs over 4 databases: {time.monotonic() - t0:.2f}s")
    finally:
        for c in clients.values():
            c.close()
    fleet.check_alive()
    for key in KEYS:
        rows = pg_rows(fleet.db_url(*key), "SELECT id, tenant_id, org_id, status FROM conveyor_jobs")
        mine = [r for r in rows if r.id in submitted[key]]
        assert len(mine) == 3 and {(r.tenant_id, r.org_id, r.status) for r in mine} == {(*key, "succeeded")}
        others = {j for k, ids in submitted.items() if k != key for j in ids}
        assert not [r for r in rows if r.id in others], f"{key}'s database holds another tenant's jobs"
        claims = pg_rows(fleet.db_url(*key), "SELECT payload FROM conveyor_job_events WHERE action = 'claimed' "
                                             "AND job_id = ANY(:ids)", ids=submitted[key])
        assert {r.payload["consumer"] for r in claims} == {"fleet-worker"}  # the one worker served them all
    assert pg_rows(fleet.control_url, "SELECT count(*) AS n FROM conveyor_jobs")[0].n == 0
    roles = pg_rows(fleet.control_url, "SELECT role, count(*) AS n FROM conveyor_workers "
                                       "WHERE stopped_at IS NULL GROUP BY role ORDER BY role")
    assert [(r.role, r.n) for r in roles] == [("dispatcher", 1), ("scheduler", 1), ("worker", 1)]
    lease = pg_rows(fleet.control_url, "SELECT holder FROM conveyor_leases WHERE name = 'scheduler-leader'")
    assert lease and lease[0].holder.endswith("-scheduler")


def test_each_tenant_and_org_sees_only_its_own_jobs(fleet):
    clients = {key: fleet.client(*key) for key in KEYS}
    try:
        ids = {}
        for key, c in clients.items():
            r = c.post("/jobs", json={"kind": "conveyor.echo", "payload": str(key)})
            assert r.status_code == 201
            ids[key] = r.json()["id"]
        for key, c in clients.items():
            wait_final(c, ids[key])
        for key, c in clients.items():
            listed = {j["id"] for j in c.get("/jobs", params={"limit": 500}).json()["items"]}
            assert ids[key] in listed and not listed & {ids[k] for k in KEYS if k != key}
            assert {(j["tenant_id"], j["org_id"]) for j in c.get("/jobs").json()["items"]} == {key}
            assert c.get(f"/jobs/{ids[key]}/events").status_code == 200
            for other in KEYS:
                if other == key:
                    continue
                oid = ids[other]
                for method, path in (("GET", f"/jobs/{oid}"), ("GET", f"/jobs/{oid}/events"),
                                     ("POST", f"/jobs/{oid}/cancel"), ("POST", f"/jobs/{oid}/retry"),
                                     ("GET", f"/jobs/{oid}/events/stream")):
                    r = c.request(method, path)
                    assert r.status_code == 404, (key, other, method, path, r.text)
                    assert r.json()["error"] == {"code": "not_found", "message": "no such job", "detail": None}
            history = sse_history(c, timeout=1.5)
            assert history and {e["job_id"] for e in history} <= {j["id"] for j in c.get(
                "/jobs", params={"limit": 500}).json()["items"]}
            assert ids[key] in {e["job_id"] for e in history}
        # a token of the whole tenant picks an org with x-org-id, and sees only that org's database
        wide = fleet.client("acme", None, sub="acme-wide")
        try:
            r = wide.get("/jobs")
            assert r.status_code == 422 and r.json()["error"]["detail"] == {"header": "x-org-id"}
            got = wide.get(f"/jobs/{ids[('acme', 'support')]}", headers={"x-org-id": "support"})
            assert got.status_code == 200 and got.json()["org_id"] == "support"
            assert wide.get(f"/jobs/{ids[('acme', 'support')]}", headers={"x-org-id": "sales"}).status_code == 404
            assert wide.get(f"/jobs/{ids[('globex', 'support')]}", headers={"x-org-id": "support"}).status_code \
                == 404
        finally:
            wide.close()
        root = client(fleet.url, "root", tenant="*", admin=True)
        try:
            assert root.get("/jobs").status_code == 422
            got = root.get(f"/jobs/{ids[('globex', 'sales')]}", headers={"x-tenant-id": "globex",
                                                                         "x-org-id": "sales"})
            assert got.status_code == 200 and got.json()["lease_owner"] is None
        finally:
            root.close()
    finally:
        for c in clients.values():
            c.close()


BAD_NAMES = ["Acme", "acme/../globex", "acme?host=evil.example", "acme@evil:5432", "acme;drop", "-acme",
             "acme sales", "a" * 64, "acmé", "acme%2F..", "acme\\x", "_acme", "acme.sales"]


def test_unregistered_tenants_and_bad_names_are_refused_without_touching_a_database(fleet):
    before = databases(fleet.prefix)
    cases = [("initech", "sales"), ("acme", "legal"), ("globex", "marketing")]
    cases += [(bad, "sales") for bad in BAD_NAMES] + [("acme", bad) for bad in BAD_NAMES]
    for tenant, org in cases:
        c = fleet.client(tenant, org, sub="probe")
        try:
            for method, path in (("POST", "/jobs"), ("GET", "/jobs"), ("GET", f"/jobs/{uuid.uuid4()}")):
                r = c.request(method, path, json={"kind": "conveyor.echo"} if method == "POST" else None)
                assert r.status_code == 403, (tenant, org, method, r.text)
                assert r.json()["error"]["code"] == "forbidden"
        finally:
            c.close()
    # the headers too, when the token allows them
    multi = client(fleet.url, "multi", tenant="acme", org="sales", tenants=["initech", "ACME"],
                   orgs=["legal", "x/../y"])
    try:
        for headers in ({"x-tenant-id": "initech"}, {"x-tenant-id": "ACME"}, {"x-org-id": "legal"},
                        {"x-org-id": "x/../y"}):
            r = multi.post("/jobs", json={"kind": "conveyor.echo"}, headers=headers)
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (headers, r.text)
        assert multi.get("/jobs").status_code == 200
    finally:
        multi.close()
    assert databases(fleet.prefix) == before
    assert set(fleet.app.tenancy.cached()) <= {fleet.app.tenancy.key(t, o) for t, o in KEYS}
    r = cli(fleet.env, "tenants", "add", "acme/../x", "--org", "sales", cwd=fleet.cwd, check=False)
    assert r.returncode == 2 and "not a valid name" in r.stderr, r.stderr
    r = cli(fleet.env, "tenants", "add", "acme", cwd=fleet.cwd, check=False)
    assert r.returncode == 2 and "name the org" in r.stderr, r.stderr
    r = cli(fleet.env, "tenants", "add", "t" * 30, "--org", "o" * 30, cwd=fleet.cwd, check=False)
    assert r.returncode == 2 and "longer than PostgreSQL's 63 bytes" in r.stderr, r.stderr
    assert databases(fleet.prefix) == before


def test_one_tenants_quota_refusals_do_not_slow_another(fleet):
    app = control_app(fleet.env, tenant_max_active_jobs=2)
    busy, other = ("acme", "sales"), ("globex", "support")
    try:
        with Server(create_app(app)) as server:
            a, b = client(server.url, "a", tenant=busy[0], org=busy[1]), client(server.url, "b", tenant=other[0],
                                                                                org=other[1])
            try:
                # the baseline: the other tenant's submit → finish with nobody refused
                def round_trip() -> float:
                    t0 = time.monotonic()
                    r = b.post("/jobs", json={"kind": "conveyor.echo", "payload": "ping"})
                    assert r.status_code == 201, r.text
                    assert wait_final(b, r.json()["id"], timeout=30)["status"] == "succeeded"
                    return time.monotonic() - t0
                baseline = min(round_trip() for _ in range(3))
                sleepers = [a.post("/jobs", json={"kind": "conveyor.sleep", "payload": {"seconds": 60}}).json()["id"]
                            for _ in range(2)]
                r = a.post("/jobs", json={"kind": "conveyor.echo"})
                assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
                assert int(r.headers["Retry-After"]) >= 1
                refused, stop = [0], threading.Event()

                def hammer():
                    with client(server.url, "a2", tenant=busy[0], org=busy[1]) as h:
                        while not stop.is_set():
                            got = h.post("/jobs", json={"kind": "conveyor.echo"})
                            assert got.status_code == 429, got.text
                            refused[0] += 1

                t = threading.Thread(target=hammer, daemon=True)
                t.start()
                try:
                    while refused[0] < 5:
                        time.sleep(0.01)
                    during = [round_trip() for _ in range(3)]
                finally:
                    stop.set()
                    t.join(30)
                print(f"other tenant's submit→finish: baseline {baseline:.3f}s, while refused "
                      f"{[round(d, 3) for d in during]} ({refused[0]} refusals)")
                assert refused[0] >= 5
                assert max(during) < max(3.0, 10 * baseline), (baseline, during)
                assert a.get("/jobs", params={"status": "running"}).json()["items"], "the sleepers hold the quota"
                for job_id in sleepers:
                    assert a.post(f"/jobs/{job_id}/cancel").status_code == 200
                    assert wait_final(a, job_id)["status"] == "cancelled"
                # the quota counts one database: acme/sales is free again, globex never was full
                assert a.post("/jobs", json={"kind": "conveyor.echo"}).status_code == 201
            finally:
                a.close()
                b.close()
    finally:
        app.close()
        app.engine.dispose()
    fleet.check_alive()


def test_the_scheduler_repairs_a_job_lost_from_the_queue_in_a_tenant_database(fleet):
    app = fleet.app.for_tenant("globex", "sales")
    with app.engine.begin() as conn:
        [job_id] = submit_many(conn, [JobSpec("conveyor.echo", {"lost": True}, "globex", "sales")])
        # as if dispatched long ago to an entry the queue no longer has
        conn.execute(update(outbox).where(outbox.c.job_id == job_id).values(
            status="dispatched", stream_entry_id="1-0", dispatched_at=utcnow() - timedelta(hours=1),
            created_at=utcnow() - timedelta(hours=1)))
    job = app.wait(job_id, timeout=30)
    assert job.status.value == "succeeded" and job.result == {"lost": True}
    actions = [e["action"] for e in app.events(job_id)]
    assert actions[:2] == ["submitted", "republished"] and actions[-1] == "succeeded", actions


def test_diagnose_and_jobs_show_look_in_the_tenants_database(fleet):
    c = fleet.client("acme", "support")
    try:
        job_id = c.post("/jobs", json={"kind": "conveyor.fail", "payload": {"code": "conversion_failed"}}).json()["id"]
        assert wait_final(c, job_id)["status"] == "failed"
    finally:
        c.close()
    report = cli_json(fleet.env, "diagnose", job_id, "--tenant", "acme", "--org", "support", "--json",
                      cwd=fleet.cwd)
    assert report["status"] == "failed" and report["error_code"] == "conversion_failed"
    checks = {f["check"]: f for f in report["findings"]}
    assert checks["tenant database"]["detail"].startswith("acme/support: ")
    assert checks["scheduler"]["ok"], checks["scheduler"]  # the leader lease is read in the control database
    for args, code, text in ((("--tenant", "acme", "--org", "sales"), 1, "no job"),
                             (("--tenant", "globex", "--org", "support"), 1, "no job"),
                             (("--tenant", "acme"), 2, "pass --tenant and --org"),
                             ((), 2, "pass --tenant and --org"),
                             (("--tenant", "ACME", "--org", "support"), 2, "not a valid name"),
                             (("--tenant", "initech", "--org", "support"), 1, "has no database here")):
        r = cli(fleet.env, "diagnose", job_id, *args, cwd=fleet.cwd, check=False)
        assert r.returncode == code and text in r.stderr, (args, r.returncode, r.stderr)
    shown = cli_json(fleet.env, "jobs", "show", job_id, "--tenant", "acme", "--org", "support", "--json",
                     cwd=fleet.cwd)
    assert shown["id"] == job_id and shown["events"][0]["action"] == "submitted"
    r = cli(fleet.env, "submit", "conveyor.echo", "--tenant", "globex", "--org", "sales", "--payload", "7",
            cwd=fleet.cwd)
    new_id = r.stdout.strip()
    assert fleet.app.for_tenant("globex", "sales").wait(new_id, timeout=30).result == 7
    listed = cli_json(fleet.env, "jobs", "list", "--tenant", "globex", "--org", "sales", "--json", cwd=fleet.cwd)
    assert new_id in {j["id"] for j in listed} and {j["org_id"] for j in listed} == {"sales"}
    fleet.check_alive()


def test_a_killed_workers_job_is_reclaimed_in_its_tenants_database(fleet):
    """Last in the module: the fleet's worker is killed (-9) mid-job and a new one takes its place."""
    c = fleet.client("globex", "support")
    try:
        job_id = c.post("/jobs", json={"kind": "conveyor.sleep", "payload": {"seconds": 2}}).json()["id"]
        deadline = time.monotonic() + 30
        while c.get(f"/jobs/{job_id}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        old = fleet.procs[0]
        old.proc.kill()
        old.proc.wait(10)
        old.stop()
        fleet.procs[0] = Process(fleet.env, "worker", "-c", "2", "--name", "fleet-worker-2", cwd=fleet.cwd,
                                 name="worker-2")
        job = wait_final(c, job_id, timeout=60)
    finally:
        c.close()
    assert job["status"] == "succeeded" and job["attempt_id"] == 2, job
    actions = [(e["action"], e["payload"].get("consumer")) for e in fleet.app.for_tenant("globex", "support")
               .events(job_id)]
    assert ("claimed", "fleet-worker") in actions and ("reclaimed", "fleet-worker-2") in actions, actions
    fleet.check_alive()
