"""Tenancy in one database: each tenant (and org) sees only its jobs; another's ids are 404, never 403."""

from __future__ import annotations

import httpx
import pytest
from api_support import auth, sse_events, token


@pytest.fixture
def clients(server):
    made = {}

    def client(sub: str, **kw) -> httpx.Client:
        c = httpx.Client(base_url=server + "/api/v1", headers=auth(token(sub, **kw)), timeout=30)
        made[sub] = c
        return c

    yield client
    for c in made.values():
        c.close()


def test_two_tenants_each_see_only_their_own_jobs(clients):
    a, b = clients("alice", tenant="acme"), clients("bob", tenant="globex")
    a_jobs = [a.post("/jobs", json={"kind": "conveyor.echo", "payload": i}).json() for i in range(3)]
    b_job = b.post("/jobs", json={"kind": "conveyor.sleep", "payload": {"seconds": 30}}).json()
    assert {j["tenant_id"] for j in a_jobs} == {"acme"} and b_job["tenant_id"] == "globex"
    assert [j["id"] for j in a.get("/jobs").json()["items"]] == [j["id"] for j in a_jobs[::-1]]
    assert [j["id"] for j in b.get("/jobs").json()["items"]] == [b_job["id"]]
    assert b.get("/jobs", params={"kind": "conveyor.echo"}).json()["items"] == []
    for c, other in ((a, b_job["id"]), (b, a_jobs[0]["id"])):
        for method, path in (("GET", f"/jobs/{other}"), ("POST", f"/jobs/{other}/cancel"),
                             ("POST", f"/jobs/{other}/retry"), ("GET", f"/jobs/{other}/events"),
                             ("GET", f"/jobs/{other}/events/stream")):
            r = c.request(method, path)
            assert r.status_code == 404 and r.json() == {"error": {"code": "not_found", "message": "no such job",
                                                                    "detail": None}}, (method, path, r.text)
    # the same answer as for an id nobody has
    nobody = a.get("/jobs/00000000-0000-4000-8000-000000000000")
    assert nobody.json() == a.get(f"/jobs/{b_job['id']}").json()
    assert b.get(f"/jobs/{b_job['id']}").json()["status"] == "queued"  # bob's job was not cancelled by alice
    history = sse_events(b, "/events/stream", headers={"Last-Event-ID": "0"}, limit=1, timeout=5)
    assert [e for e in history if a_jobs[0]["id"] in e[2]] == []


def test_tenant_and_org_headers_select_only_what_the_token_allows(clients):
    plain = clients("alice", tenant="acme")
    multi = clients("carol", tenant="acme", tenants=["initech"])
    org_token = clients("dave", tenant="acme", org="sales", orgs=["support"])
    root = clients("root", tenant="*", admin=True)
    admin_acme = clients("ops", tenant="acme", admin=True)

    r = plain.post("/jobs", json={"kind": "conveyor.echo"}, headers={"x-tenant-id": "initech"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert plain.get("/jobs", headers={"x-tenant-id": "acme"}).status_code == 200
    assert admin_acme.get("/jobs", headers={"x-tenant-id": "initech"}).status_code == 403  # admins keep a tenant
    in_initech = multi.post("/jobs", json={"kind": "conveyor.echo"}, headers={"x-tenant-id": "initech"}).json()
    assert in_initech["tenant_id"] == "initech"
    assert plain.get(f"/jobs/{in_initech['id']}").status_code == 404
    assert multi.get(f"/jobs/{in_initech['id']}").status_code == 404  # its default scope is acme
    assert multi.get(f"/jobs/{in_initech['id']}", headers={"x-tenant-id": "initech"}).status_code == 200

    sales = org_token.post("/jobs", json={"kind": "conveyor.echo"}).json()
    assert sales["tenant_id"] == "acme" and sales["org_id"] == "sales"
    support = org_token.post("/jobs", json={"kind": "conveyor.echo"}, headers={"x-org-id": "support"}).json()
    assert support["org_id"] == "support"
    assert org_token.post("/jobs", json={"kind": "conveyor.echo"}, headers={"x-org-id": "legal"}).status_code \
        == 403
    assert [j["id"] for j in org_token.get("/jobs").json()["items"]] == [sales["id"]]
    assert org_token.get(f"/jobs/{support['id']}").status_code == 404
    tenant_wide = {j["id"] for j in plain.get("/jobs").json()["items"]}
    assert {sales["id"], support["id"]} <= tenant_wide  # a token without org sees every org of its tenant
    assert [j["id"] for j in plain.get("/jobs", headers={"x-org-id": "support"}).json()["items"]] == [support["id"]]

    everything = {j["id"] for j in root.get("/jobs").json()["items"]}
    assert {in_initech["id"], sales["id"], support["id"]} <= everything
    assert root.get(f"/jobs/{in_initech['id']}").status_code == 200
    r = root.post("/jobs", json={"kind": "conveyor.echo"})
    assert r.status_code == 422 and r.json()["error"]["detail"] == {"header": "x-tenant-id"}
    assert root.post("/jobs", json={"kind": "conveyor.echo"}, headers={"x-tenant-id": "umbrella"}).json()[
        "tenant_id"] == "umbrella"
    r = root.get("/jobs", headers={"x-tenant-id": "bad\x01tenant"})
    assert r.status_code in (400, 422)
