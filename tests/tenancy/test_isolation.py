"""One tenant database failing delays only its own jobs: the worker goes on with every other tenant's."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from conveyor import store
from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.errors import ConveyorError
from conveyor.outbox import FleetDispatcher
from conveyor.plugins import load_plugins
from conveyor.worker import Worker


@pytest.fixture
def fleet(tmp_path):
    env = {"CONVEYOR_DB_URL": f"sqlite:///{tmp_path}/control.db", "CONVEYOR_TENANCY": "db-per-tenant",
           "CONVEYOR_DB_URL_TEMPLATE": f"sqlite:///{tmp_path}/{{tenant}}.db",
           "CONVEYOR_QUEUE_URL": f"memory://iso-{uuid.uuid4().hex}", "CONVEYOR_STORAGE_URL": f"file://{tmp_path}/d",
           "CONVEYOR_LEASE_SECONDS": "3", "CONVEYOR_RECLAIM_GRACE_SECONDS": "0.5", "CONVEYOR_CONFIG": "",
           "CONVEYOR_PLUGINS": "conveyor_testkinds"}
    settings = load_settings(env=env)
    app = Conveyor(settings, plugins=load_plugins(settings.plugins))
    app.init_db()
    app.tenancy.add("down")
    app.tenancy.add("up")
    dispatcher = FleetDispatcher(app, batch=50)
    worker = Worker(app, concurrency=4, block_ms=100)
    threads = [threading.Thread(target=dispatcher.run, daemon=True),
               threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)]
    for t in threads:
        t.start()
    yield app, worker
    worker.stop()
    dispatcher.stop()
    for t in threads:
        t.join(30)
    app.close()


class Outage:
    """Make one store function fail for one engine while ``on``."""

    def __init__(self, monkeypatch, name: str, engine) -> None:
        self.on, self.calls = True, 0
        real = getattr(store, name)

        def fake(bind, *args, **kwargs):
            if self.on and bind is engine:
                self.calls += 1
                raise ConveyorError(f"{name}: tenant database unreachable (test)")
            return real(bind, *args, **kwargs)

        monkeypatch.setattr(store, name, fake)


def _statuses(app: Conveyor, ids: list[str]) -> set[str]:
    return {app.get(j).status.value for j in ids}


def _wait(app: Conveyor, ids: list[str], status: str, timeout: float) -> float:
    t0 = time.monotonic()
    while _statuses(app, ids) != {status}:
        assert time.monotonic() - t0 < timeout, f"{_statuses(app, ids)} after {timeout}s"
        time.sleep(0.02)
    return time.monotonic() - t0


def test_claims_of_a_failing_tenant_database_wait_in_the_queue_while_others_run(fleet, monkeypatch):
    app, worker = fleet
    down, up = app.for_tenant("down"), app.for_tenant("up")
    outage = Outage(monkeypatch, "claim", down.engine)
    stuck = [down.submit("conveyor.echo", i, tenant="down") for i in range(3)]
    fine = [up.submit("conveyor.echo", i, tenant="up") for i in range(3)]
    took = _wait(up, fine, "succeeded", 10)
    assert took < 5 and outage.calls >= 1 and _statuses(down, stuck) == {"queued"}
    outage.on = False  # back: the reclaim loop hands the pending entries over again
    _wait(down, stuck, "succeeded", 30)
    assert worker.stats.reclaimed == 0  # they were queued, never running: claimed normally


def test_results_for_a_failing_tenant_database_are_held_and_retried_while_others_commit(fleet, monkeypatch):
    app, worker = fleet
    down, up = app.for_tenant("down"), app.for_tenant("up")
    outage = Outage(monkeypatch, "finalize", down.engine)
    held = [down.submit("conveyor.echo", i, tenant="down") for i in range(2)]
    _wait(down, held, "running", 10)
    deadline = time.monotonic() + 10
    while outage.calls < 2:  # its results were tried and put aside
        assert time.monotonic() < deadline, outage.calls
        time.sleep(0.02)
    fine = [up.submit("conveyor.echo", i, tenant="up") for i in range(3)]
    assert _wait(up, fine, "succeeded", 10) < 5  # the finalizer is not stuck on the other database
    assert _statuses(down, held) == {"running"}
    outage.on = False
    _wait(down, held, "succeeded", 30)
    assert [e["action"] for e in down.events(held[0])][-1] == "succeeded"
    assert worker.stats.stale == 0 and worker.stats.failed == 0
