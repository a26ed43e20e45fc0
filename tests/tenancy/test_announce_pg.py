"""On PostgreSQL a tenant's submit wakes the fleet dispatcher through the control database at once."""

from __future__ import annotations

import threading
import time
import uuid

from tenancy_support import create_database, drop_databases, new_prefix, pg_template, pg_url

from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.outbox import FleetDispatcher
from conveyor.plugins import load_plugins


def test_a_submit_announces_its_tenant_database_to_an_idle_fleet_dispatcher(pg_server, tmp_path):
    prefix = new_prefix()
    create_database(f"{prefix}_control")
    env = {"CONVEYOR_DB_URL": pg_url(f"{prefix}_control"), "CONVEYOR_TENANCY": "db-per-tenant-org",
           "CONVEYOR_DB_URL_TEMPLATE": pg_template(prefix), "CONVEYOR_QUEUE_URL": f"memory://a{uuid.uuid4().hex}",
           "CONVEYOR_STORAGE_URL": f"file://{tmp_path}/data", "CONVEYOR_CONFIG": ""}
    settings = load_settings(env=env)
    app = Conveyor(settings, plugins=load_plugins(""))
    d = None
    thread = None
    try:
        app.init_db()
        for org in ("a", "b"):
            app.tenancy.add("acme", org)
        d = FleetDispatcher(app, idle_max_s=60.0)  # left alone, it would look again in a minute
        thread = threading.Thread(target=d.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while len(d._state) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)
        for st in d._state.values():
            st.next_at, st.idle = time.monotonic() + 60, 60.0
        tenant = app.for_tenant("acme", "b")
        t0 = time.monotonic()
        job_id = tenant.submit("conveyor.echo", 1, tenant="acme", org="b")
        while [e["action"] for e in tenant.events(job_id)][-1] != "dispatched":
            assert time.monotonic() - t0 < 10, "the announce did not wake the dispatcher"
            time.sleep(0.005)
        took = time.monotonic() - t0
        print(f"submit → dispatched in {took * 1000:.0f} ms")
        assert took < 5
        assert d._state[app.tenancy.key("acme", "a")].next_at > time.monotonic() + 30  # only b was polled
    finally:
        if d is not None:
            d.stop()
        if thread is not None:
            thread.join(10)
        app.close()
        app.engine.dispose()
        drop_databases(prefix)
