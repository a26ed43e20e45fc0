"""Committed events reach the observers of the deployment that wrote them, not every ``Conveyor`` in the process."""

from __future__ import annotations

from conveyor import hookimpl
from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.plugins import load_plugins


class Observer:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    @hookimpl
    def conveyor_on_event(self, event):
        self.seen.append((event["job_id"], event["action"]))


def _app(tmp_path, name: str, observer: Observer) -> Conveyor:
    env = {"CONVEYOR_DB_URL": f"sqlite:///{tmp_path}/{name}.db", "CONVEYOR_QUEUE_URL": "sql",
           "CONVEYOR_STORAGE_URL": f"file://{tmp_path}/{name}-data", "CONVEYOR_CONFIG": ""}

    def register(pm):
        from conveyor import builtin_kinds
        pm.register(builtin_kinds, name="builtin")
        pm.register(observer, name=f"observer-{name}")

    app = Conveyor(load_settings(env=env), plugins=load_plugins(entry_points=False, register=register))
    app.init_db()
    _ = app.plugins  # subscribes the host's observers
    return app


def test_two_deployments_in_one_process_see_only_their_own_events(tmp_path):
    seen_a, seen_b = Observer(), Observer()
    a, b = _app(tmp_path, "a", seen_a), _app(tmp_path, "b", seen_b)
    try:
        job_a = a.submit("conveyor.echo", {"from": "a"})
        job_b = b.submit("conveyor.echo", {"from": "b"})
        b.cancel(job_b)
        assert seen_a.seen == [(job_a, "submitted")]
        assert seen_b.seen == [(job_b, "submitted"), (job_b, "cancelled")]
    finally:
        a.close()
        b.close()
    # a closed deployment's observers hear nothing more
    c = _app(tmp_path, "a", Observer())
    try:
        c.submit("conveyor.echo", {})
        assert seen_a.seen == [(job_a, "submitted")]
    finally:
        c.close()


def test_deployments_sharing_one_engine_still_see_only_their_own_events(tmp_path):
    """Observers belong to each deployment's job store, not to the engine it writes through."""
    seen_a, seen_b = Observer(), Observer()
    a = _app(tmp_path, "shared", seen_a)
    b = _app(tmp_path, "shared", seen_b)
    try:
        assert a.engine is b.engine  # one pool per URL in a process
        job_a = a.submit("conveyor.echo", {"from": "a"})
        job_b = b.submit("conveyor.echo", {"from": "b"})
        assert seen_a.seen == [(job_a, "submitted")]
        assert seen_b.seen == [(job_b, "submitted")]
    finally:
        a.close()
        b.close()
