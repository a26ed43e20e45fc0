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


DOWN = {"CONVEYOR_QUEUE_URL": "redis://127.0.0.1:9/0"}  # the discard port: nothing listens, connects are refused


def _one_error_line(r) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_dispatcher_once_with_the_queue_down_fails_with_one_line_and_keeps_the_rows(cli, app):
    job_id = cli("submit", "conveyor.echo", extra=DOWN).stdout.strip()  # the outbox takes it
    r = cli("dispatcher", "--once", check=False, extra=DOWN)
    assert r.returncode == 1 and r.stdout == ""
    line = _one_error_line(r)
    assert "1 outbox row(s) could not be published (0 were): " in line and "CONVEYOR_QUEUE_URL" in line
    assert app.get(job_id).status.value == "queued"
    assert "published 1" in cli("dispatcher", "--once").stdout  # nothing was lost


def test_worker_burst_with_the_queue_down_gives_up_with_one_line(cli, app):
    r = cli("worker", "--burst", check=False, extra=DOWN)
    assert r.returncode == 1
    line = _one_error_line(r)
    assert "the queue has not answered for 10 s: cannot reach Redis" in line and "CONVEYOR_QUEUE_URL" in line


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
    assert r.stdout.startswith("applied jobs 0001 (")
    r = cli("db", "init", extra={"CONVEYOR_DB_URL": f"sqlite:///{tmp_path}/empty.db"})
    assert r.stdout.strip() == "schema up to date (jobs 0003, cad cad0001)"


def test_doctor_outside_a_deployment_creates_nothing_and_says_what_to_run(cli, tmp_path):
    here = tmp_path / "nowhere"
    here.mkdir()
    r = cli("doctor", check=False, extra={"CONVEYOR_DB_URL": f"sqlite:///{here}/conveyor.db",
                                          "CONVEYOR_QUEUE_URL": "sql", "CONVEYOR_STORAGE_URL": f"file://{here}/data"})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert list(here.iterdir()) == []  # no database file, no storage folder
    failed = [line for line in r.stdout.splitlines() if line.startswith("!!")]
    assert [line.split()[1] for line in failed] == ["database", "queue", "processes"], r.stdout
    assert all("`conveyor db init`" in line and "SQL" not in line for line in failed), failed
    assert "not created yet" in r.stdout


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


DEEP = "[" * 60_000 + "]" * 60_000


@pytest.mark.parametrize("args,extra,code,message", [
    (["conveyor.echo", "--priority", str(2 ** 63)], {}, "invalid_job", "priority must be an integer from -1000000"),
    (["conveyor.echo", "--delay", "inf"], {}, "invalid_job", "delay must be a number of seconds"),
    (["conveyor.echo", "--delay", "nan"], {}, "invalid_job", "got nan"),
    (["conveyor.echo", "--delay", "1e300"], {}, "invalid_job", "366 days"),
    (["conveyor.echo", "--max-attempts", "0"], {}, "invalid_job", "max_attempts must be an integer from 1 to 1000"),
    (["\x1b]0;pwned\x07\x1b[2Jconveyor.echo"], {}, "invalid_job", "is not a job kind name"),
    (["conveyor.echo", "--idempotency-key", "k" * 201], {}, "invalid_job", "the limit is 200"),
    (["conveyor.echo", "--payload", DEEP], {}, "invalid_payload", "nested more than 64 levels"),
    (["conveyor.echo", "--payload", '{"x": NaN}'], {}, "invalid_payload", "NaN"),
    (["conveyor.echo", "--payload", '{"blob": "' + "x" * 100 + '"}'], {"CONVEYOR_MAX_PAYLOAD_BYTES": "64"},
     "payload_too_large", "the limit is 64 (CONVEYOR_MAX_PAYLOAD_BYTES)"),
], ids=["priority-2**63", "delay-inf", "delay-nan", "delay-1e300", "max-attempts-0", "escape-kind", "long-key",
        "60k-deep", "nan", "too-large"])
def test_submit_refuses_hostile_input_with_a_one_line_coded_error(cli, app, args, extra, code, message):
    r = cli("submit", *args, check=False, extra=extra)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"error: {code}: ") and r.stderr.count("\n") == 1, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert "\x1b" not in r.stderr + r.stdout and "\x07" not in r.stderr + r.stdout
    assert job_count(app) == 0


def test_job_text_is_escaped_in_list_show_and_diagnose(cli, app):
    hostile = "\x1b]0;pwned\x07\x1b[31mred\x9b2J\rfake line"
    job_id = cli("submit", "conveyor.fail", "--payload",
                 json.dumps({"code": "invalid_payload", "message": hostile})).stdout.strip()
    cli("run", "--burst")
    assert app.get(job_id).last_error == hostile  # stored as sent, shown escaped
    with app.engine.begin() as c:  # a row written before kinds were checked
        c.execute(jobs.update().where(jobs.c.id == job_id).values(kind="evil\x1b[2J\x9b", lease_owner="w\x1b[1m"))
    for args in (("jobs", "list"), ("jobs", "show", job_id), ("diagnose", job_id)):
        out = cli(*args).stdout
        for raw in ("\x1b", "\x07", "\x9b", "\r"):
            assert raw not in out, (args, out)
        assert "\\x1b" in out, (args, out)
    assert "evil\\x1b[2J\\x9b" in cli("jobs", "list").stdout
    shown = cli("jobs", "show", job_id).stdout
    assert "\\x1b]0;pwned\\x07\\x1b[31mred\\x9b2J\\x0dfake line" in shown
    assert json.loads(cli("jobs", "show", job_id, "--json").stdout)["last_error"] == hostile


def test_cancel_reason_with_escape_sequences_is_refused(cli, app):
    job_id = cli("submit", "conveyor.sleep", "--payload", '{"seconds": 100}').stdout.strip()
    r = cli("jobs", "cancel", job_id, "--reason", "\x1b[2Jgone", check=False)
    assert r.returncode == 2 and r.stderr.startswith("error: invalid_job: reason contains the control character")
    assert app.get(job_id).status.value == "queued"


def test_max_payload_bytes_setting_source_and_bad_value(cli):
    cfg = json.loads(cli("config", "--json", extra={"CONVEYOR_MAX_PAYLOAD_BYTES": "2048"}).stdout)
    assert cfg["max_payload_bytes"] == {"value": 2048, "source": "env CONVEYOR_MAX_PAYLOAD_BYTES"}
    assert json.loads(cli("config", "--json").stdout)["max_payload_bytes"] == {"value": 1048576, "source": "default"}
    for bad, message in (("1MB", "max_payload_bytes must be int, got '1MB'"), ("0", "must be > 0")):
        r = cli("submit", "conveyor.echo", check=False, extra={"CONVEYOR_MAX_PAYLOAD_BYTES": bad})
        assert r.returncode == 2 and message in r.stderr and "CONVEYOR_MAX_PAYLOAD_BYTES" in r.stderr
        assert "Traceback" not in r.stderr


def test_json_logs_give_one_object_per_line_with_the_state_change_fields(cli, app):
    """On every backend each state change is one line (a PostgreSQL success too), with its fields as members."""
    job_id = cli("submit", "conveyor.echo", "--payload", '{"x": 1}').stdout.strip()
    r = cli("--log-level", "INFO", "run", "--burst", extra={"CONVEYOR_LOG_FORMAT": "json"})
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("done: ")]
    records = [json.loads(line) for line in lines]  # every log line is one JSON object
    mine = [rec for rec in records if rec.get("job_id") == job_id]
    assert [rec["action"] for rec in mine if rec["logger"] == "conveyor.jobs"][-1] == "succeeded"
    claimed = next(rec for rec in mine if rec.get("action") == "claimed")
    assert claimed["level"] == "INFO" and claimed["attempt_id"] == 1 and claimed["time"].endswith("Z")
    bad = cli("jobs", "list", check=False, extra={"CONVEYOR_LOG_FORMAT": "yaml"})
    assert bad.returncode == 2 and "CONVEYOR_LOG_FORMAT must be text or json, got 'yaml'" in bad.stderr


def test_a_first_party_plugin_command_without_its_plugin_names_the_distribution(monkeypatch):
    from click.testing import CliRunner

    import conveyor.cli as launcher
    monkeypatch.setattr(launcher.cli, "_plugins_added", True)  # as on a host where no plugin is installed
    monkeypatch.setattr(launcher.cli, "commands", {k: v for k, v in launcher.cli.commands.items()
                                                    if k not in launcher.FIRST_PARTY_COMMANDS})
    r = CliRunner().invoke(launcher.cli, ["judge", "languages"])
    assert r.exit_code == 2
    assert "comes with the conveyor-judge distribution" in r.output and "conveyor-jobs[judge]" in r.output
    r = CliRunner().invoke(launcher.cli, ["jdge"])
    assert r.exit_code == 2 and "No such command 'jdge'." in r.output
