"""The `conveyor` launcher, run as a real process against a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from conveyor.schema import jobs

from pipeline_support import TESTS


@pytest.fixture
def cli(env, app, tmp_path):
    def run(*args, check=True, extra=None):
        full = dict(os.environ)
        full.update(env)
        full.update(extra or {})
        full["PYTHONPATH"] = os.pathsep.join([str(TESTS / "plugins"), full.get("PYTHONPATH", "")])
        r = subprocess.run([sys.executable, "-m", "conveyor", *args], env=full, capture_output=True, text=True,
                           timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL)
        if check:
            assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
        return r
    return run


def job_count(app):
    with app.engine.connect() as c:
        return c.execute(select(func.count()).select_from(jobs)).scalar()


def test_bad_payload_json_is_a_clear_error_exit_2_and_writes_nothing(cli, app):
    r = cli("submit", "conveyor.echo", "--payload", "{not json", check=False)
    assert r.returncode == 2
    assert "--payload" in r.stderr and "not valid JSON" in r.stderr and "Traceback" not in r.stderr
    assert job_count(app) == 0


def test_submit_run_show_list(cli, app):
    job_id = cli("submit", "conveyor.echo", "--payload", '{"hello": "world"}').stdout.strip()
    assert app.get(job_id).status.value == "queued"
    cli("run", "--burst", "-c", "2")
    data = json.loads(cli("jobs", "show", job_id, "--json").stdout)
    assert data["status"] == "succeeded" and data["result"] == {"hello": "world"}
    for key in ("attempt_id", "attempts", "error_code", "last_error", "error_history", "events"):
        assert key in data
    assert [e["action"] for e in data["events"]] == ["submitted", "dispatched", "claimed", "succeeded"]
    text = cli("jobs", "show", job_id).stdout
    assert "succeeded" in text and "claimed" in text
    listed = json.loads(cli("jobs", "list", "--status", "succeeded", "--json").stdout)
    assert [j["id"] for j in listed] == [job_id]
    assert cli("jobs", "list", "--kind", "nope").stdout == ""


def test_worker_burst_and_dispatcher_once(cli, app):
    ids = [cli("submit", "conveyor.echo", "--payload", f'{{"i": {i}}}').stdout.strip() for i in range(3)]
    assert "published 3" in cli("dispatcher", "--once").stdout
    cli("worker", "--burst", "--concurrency", "2")
    assert all(app.get(i).status.value == "succeeded" for i in ids)


def test_submit_options_and_idempotency(cli, app):
    a = json.loads(cli("submit", "conveyor.echo", "--tenant", "t9", "--org", "o9", "--priority", "5",
                       "--idempotency-key", "same", "--delay", "60", "--max-attempts", "7", "--json").stdout)
    assert (a["tenant_id"], a["org_id"], a["priority"], a["max_attempts"]) == ("t9", "o9", 5, 7)
    assert a["next_attempt_at"] is not None
    b = cli("submit", "conveyor.echo", "--tenant", "t9", "--idempotency-key", "same").stdout.strip()
    assert b == a["id"]


def test_cancel_and_illegal_cancel(cli, app):
    job_id = cli("submit", "conveyor.sleep", "--payload", '{"seconds": 100}').stdout.strip()
    assert "cancelled" in cli("jobs", "cancel", job_id).stdout
    r = cli("jobs", "cancel", job_id, check=False)
    assert r.returncode == 1 and "cannot go from 'cancelled'" in r.stderr and "Traceback" not in r.stderr
    r = cli("jobs", "show", "no-such-id", check=False)
    assert r.returncode == 1 and "no job" in r.stderr


def test_queue_pressure_is_one_json_line(cli, app):
    cli("submit", "conveyor.echo")
    cli("dispatcher", "--once")
    out = cli("queue", "pressure").stdout
    assert out.count("\n") == 1
    p = json.loads(out)
    assert set(p) == {"length", "pending", "lag", "oldest_age_ms", "oldest_age_source", "approx"}
    assert p["length"] == 1 and p["oldest_age_source"] == "undelivered"


def test_errors_plugins_config_doctor(cli, app, env):
    codes = {c["code"] for c in json.loads(cli("errors", "--json").stdout)}
    assert {"lease_lost", "timeout", "handler_not_found"} <= codes
    assert "next:" in cli("errors").stdout
    names = {p["name"] for p in json.loads(cli("plugins", "--json").stdout)}
    assert {"builtin", "conveyor_testkinds"} <= names
    cfg = json.loads(cli("config", "--json").stdout)
    assert cfg["lease_seconds"] == {"value": 3.0, "source": "env CONVEYOR_LEASE_SECONDS"}
    assert cfg["concurrency"]["source"] == "default"
    checks = json.loads(cli("doctor", "--json").stdout)
    assert all(c["ok"] for c in checks), checks


def test_uninitialised_database_says_what_to_run(cli, tmp_path):
    r = cli("jobs", "list", check=False, extra={"CONVEYOR_DB_URL": f"sqlite:///{tmp_path}/empty.db"})
    assert r.returncode == 2 and "conveyor db init" in r.stderr
    r = cli("db", "init", extra={"CONVEYOR_DB_URL": f"sqlite:///{tmp_path}/empty.db"})
    assert "created" in r.stdout
    r = cli("db", "init", extra={"CONVEYOR_DB_URL": f"sqlite:///{tmp_path}/empty.db"})
    assert "already" in r.stdout


def test_bad_config_is_a_clear_error(cli):
    r = cli("jobs", "list", check=False, extra={"CONVEYOR_LEASE_SECONDS": "soon"})
    assert r.returncode == 2 and "CONVEYOR_LEASE_SECONDS" in r.stderr and "Traceback" not in r.stderr
    r = cli("jobs", "list", check=False, extra={"CONVEYOR_QUEUE_URL": "kafka://x"})
    assert r.returncode == 2 and "unknown queue scheme" in r.stderr


def test_diagnose_names_cause_and_next_step(cli, app):
    job_id = cli("submit", "conveyor.fail", "--payload", '{"code": "invalid_payload"}').stdout.strip()
    report = json.loads(cli("diagnose", job_id, "--json").stdout)
    assert report["status"] == "queued" and "dispatcher" in report["cause"]
    cli("run", "--burst")
    report = json.loads(cli("diagnose", job_id, "--json").stdout)
    assert report["status"] == "failed" and report["cause"].startswith("invalid_payload")
    assert "payload" in report["next_step"].lower()
    assert "cause:" in cli("diagnose", job_id).stdout


def test_demo_runs_real_jobs_and_prints_a_summary(cli, tmp_path):
    r = cli("demo", "--jobs", "30", extra={"CONVEYOR_DB_URL": f"sqlite:///{tmp_path}/demo.db"})
    assert "every job ended as expected" in r.stdout
    assert "conveyor.echo" in r.stdout and "p99" in r.stdout


def test_run_burst_exits_with_delayed_jobs_left(cli, app):
    later = cli("submit", "conveyor.echo", "--delay", "3600").stdout.strip()
    now = cli("submit", "conveyor.echo").stdout.strip()
    cli("run", "--burst")
    assert app.get(now).status.value == "succeeded" and app.get(later).status.value == "queued"
