"""Tenancy without servers: settings, names, URLs, the registry, the engine cache, the new index."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.db import missing_tables
from conveyor.errors import ConfigError
from conveyor.plugins import load_plugins
from conveyor.tenancy import (
    InvalidTenant,
    TenantKey,
    UnknownTenant,
    check_name,
    database_url,
)

GOOD = ["a", "acme", "acme-eu", "acme_2", "0", "9lives", "a" * 63]
BAD = ["", "A", "Acme", "-a", "_a", "a" * 64, "a/b", "a.b", "a b", "a:b", "a@b", "a?b", "a#b", "a%2f", "a\\b",
       "a'b", 'a"b', "a;b", "é", "a\n", "\u0430cme", None, 7]


@pytest.mark.parametrize("name", GOOD)
def test_valid_names(name):
    assert check_name("tenant", name) == name


@pytest.mark.parametrize("name", BAD)
def test_invalid_names_are_refused(name):
    with pytest.raises(InvalidTenant, match="not a valid name"):
        check_name("tenant", name)


def _settings(tmp_path, **env):
    base = {"CONVEYOR_DB_URL": f"sqlite:///{tmp_path}/control.db", "CONVEYOR_CONFIG": "",
            "CONVEYOR_STORAGE_URL": f"file://{tmp_path}/data", "CONVEYOR_PLUGINS": "conveyor_testkinds"}
    return load_settings(env={**base, **env}, path=None)


@pytest.mark.parametrize("env, message", [
    ({"CONVEYOR_TENANCY": "per-tenant"}, "tenancy must be one of single, db-per-tenant, db-per-tenant-org"),
    ({"CONVEYOR_TENANCY": "db-per-tenant"}, "needs CONVEYOR_DB_URL_TEMPLATE"),
    ({"CONVEYOR_TENANCY": "db-per-tenant", "CONVEYOR_DB_URL_TEMPLATE": "sqlite:///x.db"}, "must contain {tenant}"),
    ({"CONVEYOR_TENANCY": "db-per-tenant", "CONVEYOR_DB_URL_TEMPLATE": "sqlite:///{tenant}_{org}.db"},
     "may only contain the placeholders {tenant}"),
    ({"CONVEYOR_TENANCY": "db-per-tenant-org", "CONVEYOR_DB_URL_TEMPLATE": "sqlite:///{tenant}.db"},
     "must contain {org}"),
    ({"CONVEYOR_TENANCY": "db-per-tenant", "CONVEYOR_DB_URL_TEMPLATE": "sqlite:///{tenant!r}.db"},
     "may only contain"),
    ({"CONVEYOR_TENANCY": "db-per-tenant", "CONVEYOR_DB_URL_TEMPLATE": "sqlite:///{tenant}}.db"},
     "may only contain"),
    ({"CONVEYOR_TENANCY": "db-per-tenant", "CONVEYOR_DB_URL_TEMPLATE": "{tenant}"}, "is not a database URL"),
    ({"CONVEYOR_TENANT_CACHE_SIZE": "0"}, "tenant_cache_size must be > 0"),
])
def test_settings_that_do_not_fit_together_are_refused(tmp_path, env, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        _settings(tmp_path, **env)


def test_the_template_is_masked_and_single_stays_the_default(tmp_path):
    s = _settings(tmp_path)
    assert (s.tenancy, s.db_url_template, s.tenant_cache_size) == ("single", "", 64)
    s = _settings(tmp_path, CONVEYOR_TENANCY="db-per-tenant",
                  CONVEYOR_DB_URL_TEMPLATE="postgresql+psycopg://u:pw@db/conveyor__{tenant}")
    assert s.masked()["db_url_template"] == ("postgresql+psycopg://u:***@db/conveyor__{tenant}",
                                             "env CONVEYOR_DB_URL_TEMPLATE")


def test_urls_are_filled_from_checked_names_only():
    t = "postgresql+psycopg://u:pw@db:5432/conveyor__{tenant}__{org}?sslmode=require"
    assert database_url(t, TenantKey("acme", "eu-1")) == \
        "postgresql+psycopg://u:pw@db:5432/conveyor__acme__eu-1?sslmode=require"
    with pytest.raises(InvalidTenant):
        database_url(t, TenantKey("acme", "x?host=evil"))
    with pytest.raises(InvalidTenant, match="longer than PostgreSQL's 63 bytes"):
        database_url(t, TenantKey("a" * 30, "b" * 30))
    assert database_url("sqlite:///data/{tenant}.db", TenantKey("a" * 63)).endswith("a" * 63 + ".db")


def _control(tmp_path, mode="db-per-tenant", template="{tmp}/t/{{tenant}}.db", **more):
    s = _settings(tmp_path, CONVEYOR_TENANCY=mode,
                  CONVEYOR_DB_URL_TEMPLATE="sqlite:///" + template.format(tmp=tmp_path), **more)
    app = Conveyor(s, plugins=load_plugins(s.plugins))
    app.init_db()
    return app


def test_registry_add_list_and_lookups(tmp_path):
    app = _control(tmp_path)
    t = app.tenancy
    assert t is not None and not t.per_org and missing_tables(app.engine, control=True) == []
    with pytest.raises(UnknownTenant, match="has no database here"):
        app.for_tenant("acme")
    assert not (tmp_path / "t" / "acme.db").exists()  # a lookup never creates a database
    with pytest.raises(InvalidTenant):
        app.for_tenant("../acme")
    r = t.add("acme")
    assert r["registered"] and r["database_created"]
    # the CAD plugin's history too: its table is in every job database
    assert [a.split(" (")[0] for a in r["applied"]] == ["jobs 0001", "jobs 0002", "jobs 0003", "cad cad0001"]
    again = t.add("acme")
    assert (again["registered"], again["database_created"], again["applied"]) == (False, False, [])
    acme = app.for_tenant("acme")
    assert acme is app.for_tenant("acme") and acme.tenant_key == TenantKey("acme")
    assert acme.control is app and acme.queue is app.queue and acme.storage is app.storage
    assert acme.for_tenant("acme") is acme
    job_id = acme.submit("conveyor.echo", 1, tenant="acme")
    assert acme.get(job_id).tenant_id == "acme"
    with pytest.raises(ConfigError, match=r"submit through app\.for_tenant"):
        app.submit("conveyor.echo", 1, tenant="acme")
    assert [(d["tenant"], d["org"]) for d in t.describe()] == [("acme", None)]
    (tmp_path / "o").mkdir()
    with pytest.raises(InvalidTenant, match="name the org"):
        _control(tmp_path / "o", mode="db-per-tenant-org", template="{tmp}/{{tenant}}_{{org}}.db").for_tenant("a")
    app.close()


def test_two_names_filling_the_template_alike_cannot_both_register(tmp_path):
    app = _control(tmp_path, mode="db-per-tenant-org", template="{tmp}/x__{{tenant}}__{{org}}.db")
    app.tenancy.add("a__b", "c")
    with pytest.raises(InvalidTenant, match="would share the database"):
        app.tenancy.add("a", "b__c")
    assert [str(k) for k in app.tenancy.registered(refresh=True)] == ["a__b/c"]
    app.close()


def test_the_engine_cache_is_bounded_and_disposes_what_it_evicts(tmp_path):
    app = _control(tmp_path, CONVEYOR_TENANT_CACHE_SIZE="2")
    t = app.tenancy
    for name in ("t1", "t2", "t3"):
        t.add(name)
    disposed = []
    apps = {}
    for name in ("t1", "t2"):
        apps[name] = app.for_tenant(name)
        eng = apps[name].engine
        orig = eng.dispose
        eng.dispose = lambda orig=orig, name=name: (disposed.append(name), orig())  # type: ignore[method-assign]
    app.for_tenant("t1")  # t1 is now the most recently used
    app.for_tenant("t3")
    assert disposed == ["t2"] and [str(k) for k in t.cached()] == ["t1", "t3"] and t.evicted == 1
    fresh = app.for_tenant("t2")
    assert fresh is not apps["t2"] and disposed == ["t2", "t1"]
    app.close()
    assert t.cached() == []


def test_the_fleet_dispatcher_gives_each_tenant_database_one_batch_per_round(tmp_path):
    import uuid

    from conveyor.outbox import FleetDispatcher
    from conveyor.store import JobSpec
    app = _control(tmp_path, CONVEYOR_QUEUE_URL=f"memory://fair-{uuid.uuid4().hex}")
    for name in ("big", "small", "idle"):
        app.tenancy.add(name)
    big, small = app.for_tenant("big"), app.for_tenant("small")
    big.submit_many([JobSpec("conveyor.echo", i, "big") for i in range(1000)])
    small.submit("conveyor.echo", "me too", tenant="small")
    d = FleetDispatcher(app, batch=100)

    def pending(a):
        with a.engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM conveyor_outbox WHERE status = 'pending'")).scalar()

    r = d.run_once(force=True)
    assert r.published == 101 and (pending(big), pending(small)) == (900, 0)  # the backlog waits its turn
    assert d.run_once(force=True).published == 100
    entries = app.queue.read("probe", 1000)
    assert {e.fields["tenant_id"] for e in entries} == {"big", "small"} and len(entries) == 201
    assert d.pending_count() == 800
    app.close()


def test_settings_built_in_code_are_checked_when_tenancy_is_first_used(tmp_path):
    s = _settings(tmp_path).with_(tenancy="db-per-tenant")
    app = Conveyor(s, plugins=load_plugins(s.plugins))
    with pytest.raises(ConfigError, match="needs CONVEYOR_DB_URL_TEMPLATE"):
        app.for_tenant("acme")
