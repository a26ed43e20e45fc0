"""Prometheus metrics: counters from committed events, attempt durations, a real /metrics endpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

from conveyor.metrics import enable
from conveyor.store import JobSpec

from pipeline_support import TESTS


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or (line.startswith(name + "{") and line.split(" ")[0] == name):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_events_and_attempts_are_counted(app, pipeline):
    m = enable()
    before = sample(m.render().decode(), 'conveyor_job_events_total{action="succeeded"}')
    ids = app.submit_many([JobSpec("conveyor.echo", {"i": i}) for i in range(5)])
    fail = app.submit("conveyor.fail", {"code": "invalid_payload"})
    with pipeline() as p:
        p.wait([*ids, fail])
    text = m.render().decode()
    assert sample(text, 'conveyor_job_events_total{action="succeeded"}') - before == 5
    assert sample(text, 'conveyor_job_events_total{action="job_failed"}') >= 1
    assert 'conveyor_attempt_seconds_count{kind="conveyor.echo",outcome="succeeded"}' in text
    # the worker's Metrics middleware: handler time, by whether the handler returned or raised
    assert sample(text, 'conveyor_handler_seconds_count{kind="conveyor.echo",outcome="returned"}') >= 5
    assert sample(text, 'conveyor_handler_seconds_count{kind="conveyor.fail",outcome="raised"}') >= 1
    # labels stay low-cardinality: no job id as a label or in a label's value (route templates name {job_id})
    assert 'job_id="' not in text
    assert not any(i in text for i in [*ids, fail])


def test_a_worker_serves_metrics_over_http(app, env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    full = {**os.environ, **env, "CONVEYOR_METRICS_PORT": str(port)}
    full["PYTHONPATH"] = os.pathsep.join([str(TESTS / "plugins"), full.get("PYTHONPATH", "")])
    job = app.submit("conveyor.sleep", {"seconds": 3})
    proc = subprocess.Popen([sys.executable, "-m", "conveyor", "run", "-c", "2"], env=full,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        body = ""
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
                if 'action="claimed"' in body:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.2)
        assert "conveyor_job_events_total" in body and 'action="claimed"' in body
        assert app.get(job).status.value in ("running", "succeeded")
    finally:
        proc.terminate()
        proc.wait(30)


def _families():
    """Every metric family of this process's registry (core and plugins), with its label and sample names."""
    registry = enable().registry
    # prometheus_client keeps collector → sample names here; its collectors know their label names
    return [(c, names) for c, names in registry._collector_to_names.items()]


def test_every_metric_family_has_only_bounded_labels():
    from conveyor.metrics import BOUNDED_LABELS
    families = _families()
    names = {n for _, ns in families for n in ns}
    for collector, _ in families:
        labels = set(getattr(collector, "_labelnames", ()))
        assert labels <= BOUNDED_LABELS, (collector, labels - BOUNDED_LABELS)
    # the plugins' families are declared when metrics are enabled, before anything is counted
    assert {"conveyor_judge_verdicts_total", "conveyor_sandbox_runs_total", "conveyor_cad_conversions_total",
            "conveyor_scheduler_actions_total", "conveyor_outbox_pending"} <= names


def test_an_unbounded_label_is_refused():
    import pytest
    with pytest.raises(ValueError, match="job_id"):
        enable().counter("conveyor_test_per_job_total", "never", ("job_id",))


def test_the_dashboard_and_the_alerts_name_only_metrics_that_exist():
    import json
    import re
    docs = TESTS.parent / "docs" / "ops"
    names = {n for _, ns in _families() for n in ns}
    dashboard = json.loads((docs / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    alerts = (docs / "alerts.yml").read_text()
    used = {m for text in [*exprs, alerts] for m in re.findall(r"\bconveyor_[a-z_]+", text)}
    assert len(used) >= 12
    assert sorted(used - names) == []
