"""Schema migrations on SQLite and the real PostgreSQL: a database made by release 0.1.0 (before
migrations existed) is upgraded without losing a row, a fresh one matches ``conveyor.schema``,
and the CLI says where a database stands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from conveyor import migrate
from conveyor.db import init_db, make_engine
from conveyor.errors import SchemaTooNew
from conveyor.schema import control_metadata, metadata
from conveyor_cad.schema import MIGRATIONS as CAD

HERE = Path(__file__).parent
PG_URL = os.environ.get("CONVEYOR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
#: release 0.1.0 made the core's tables and conveyor_files, which the CAD plugin's history now owns
#: the tables release 0.1.0 had (later revisions add others: conveyor_stats in jobs 0003)
TABLES = sorted({*metadata.tables, *CAD.metadata.tables} - {"conveyor_stats"})
T0 = datetime(2026, 11, 20, 8, 0, 0)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path):
    """The URL of an empty database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/release.db"
    return request.getfixturevalue("pg_empty_url")


@pytest.fixture
def pg_empty_url(request):
    """An empty PostgreSQL schema of its own (dropped after)."""
    request.getfixturevalue("pg_schema")  # PostgreSQL reachable (fails on CI otherwise)
    schema = f"m_{uuid.uuid4().hex[:10]}"
    admin = make_engine(PG_URL)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    yield f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    with admin.begin() as c:
        c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def _release_0_1_0(engine) -> None:
    """Create the tables exactly as release 0.1.0's ``create_all`` did, and fill each with rows."""
    sql = (HERE / f"release_0_1_0.{engine.dialect.name}.sql").read_text()
    body = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
    ev = "INSERT INTO conveyor_job_events (job_id, file_id, attempt_id, action, payload, created_at) VALUES "
    rows = [
        "INSERT INTO conveyor_jobs (id, kind, tenant_id, status, priority, payload, result, error_history, "
        "attempt_id, attempts, max_attempts, created_at, updated_at, finished_at, file_id) VALUES "
        "('j-done', 'cad.convert', 'acme', 'succeeded', 5, '{\"file_id\": \"f-1\"}', '{\"status\": \"done\"}', "
        "'[]', 1, 1, 3, :t0, :t0, :t0, 'f-1'), "
        "('j-queued', 'conveyor.echo', 'default', 'queued', 0, '{\"hello\": \"world\"}', NULL, '[]', 0, 0, 3, "
        ":t0, :t0, NULL, NULL)",
        ev + "('j-done', 'f-1', 0, 'submitted', '{}', :t0), ('j-done', 'f-1', 1, 'succeeded', '{}', :t0), "
             "('j-queued', NULL, 0, 'submitted', '{}', :t0)",
        "INSERT INTO conveyor_outbox (job_id, stream, message, status, attempts, next_attempt_at, created_at) "
        "VALUES ('j-done', 'conveyor:jobs', '{}', 'dispatched', 1, :t0, :t0), "
        "('j-queued', 'conveyor:jobs', '{\"priority\": 0, \"fields\": {}}', 'pending', 0, :t0, :t0)",
        "INSERT INTO conveyor_files (id, tenant_id, filename, system_path, size, created_at, updated_at, "
        "conversion_status) VALUES ('f-1', 'acme', 'bracket.step', 'files/f-1/bracket.step', 1234, :t0, :t0, 'done')",
        "INSERT INTO conveyor_workers (name, role, host, pid, slots, in_flight, started_at, last_progress_at, "
        "last_seen_at) VALUES ('w-1', 'worker', 'host-a', 4242, 4, 0, :t0, :t0, :t0)",
        "INSERT INTO conveyor_leases (name, holder, token, expires_at) VALUES ('scheduler', 'w-1', 7, :t0)",
        "INSERT INTO conveyor_queue (stream, job_id, priority, fields, enqueued_at, deliveries) "
        "VALUES ('conveyor:jobs', 'j-queued', 0, '{}', :t0, 0)",
    ]
    with engine.begin() as conn:
        for statement in body.split(";"):
            if statement.strip():
                conn.execute(text(statement))
        for statement in rows:
            conn.execute(text(statement), {"t0": T0})


def _dump(engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {t: sorted(tuple(str(v) for v in r) for r in conn.execute(text(f"SELECT * FROM {t}")))
                for t in TABLES}


def _cli(url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONVEYOR_DB_URL": url, "CONVEYOR_QUEUE_URL": "sql", "CONVEYOR_CONFIG": "",
           "CONVEYOR_STORAGE_URL": f"file://{cwd}/data"}
    return subprocess.run([sys.executable, "-m", "conveyor", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=cwd, stdin=subprocess.DEVNULL)


def test_a_release_0_1_0_database_is_upgraded_without_losing_a_row(empty_url, tmp_path):
    engine = make_engine(empty_url)
    _release_0_1_0(engine)
    before = _dump(engine)
    assert all(before[t] for t in TABLES)  # every table has rows to lose
    [jobs] = migrate.state(engine)
    assert (jobs.current, [r.revision for r in jobs.pending]) == (None, ["0001", "0002", "0003"])

    status = _cli(empty_url, "db", "status", "--json", cwd=tmp_path)
    assert status.returncode == 1 and "Traceback" not in status.stderr
    assert [p["revision"] for p in json.loads(status.stdout)[0]["pending"]] == ["0001", "0002", "0003"]
    # every other command still runs, and says what to do
    listed = _cli(empty_url, "jobs", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "schema is behind this release" in listed.stderr and "conveyor db upgrade" in listed.stderr
    doctor = _cli(empty_url, "doctor", "--json", cwd=tmp_path)
    schema = {c["check"]: c for c in json.loads(doctor.stdout)}["schema"]
    assert not schema["ok"] and "0003" in schema["detail"] and schema["next_step"] == "run `conveyor db upgrade`"

    up = _cli(empty_url, "db", "upgrade", cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert up.stdout.startswith("applied jobs 0001 (") and ", jobs 0003 (" in up.stdout
    assert ", cad cad0001 (" in up.stdout  # the plugin's history takes over the table 0.1.0 made

    assert _dump(engine) == before
    assert migrate.differences(engine, plugins=[CAD]) == []
    ix = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("conveyor_jobs")}
    assert ix["ix_conveyor_jobs_tenant_created"] == ["tenant_id", "created_at", "id"]
    again = _cli(empty_url, "db", "upgrade", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.strip() == "schema up to date (jobs 0003, cad cad0001)"
    assert _cli(empty_url, "db", "status", cwd=tmp_path).returncode == 0
    schema = {c["check"]: c for c in json.loads(_cli(empty_url, "doctor", "--json", cwd=tmp_path).stdout)}["schema"]
    assert schema["ok"], schema

    # the upgraded database works on: old rows read, new ids continue after the old ones
    from conveyor.app import Conveyor
    from conveyor.config import load_settings
    app = Conveyor(load_settings(env={"CONVEYOR_DB_URL": empty_url, "CONVEYOR_QUEUE_URL": "sql",
                                      "CONVEYOR_STORAGE_URL": f"file://{tmp_path}/data", "CONVEYOR_CONFIG": ""}))
    try:
        assert app.get("j-done").result == {"status": "done"}
        new = app.submit("conveyor.echo", {"n": 1})
        with engine.connect() as conn:
            ids = conn.execute(text("SELECT id FROM conveyor_outbox WHERE job_id = :j"), {"j": new}).scalars().all()
        assert ids == [3]
        assert [e["action"] for e in app.events("j-done")] == ["submitted", "succeeded"]
    finally:
        app.close()
    engine.dispose()


def test_a_fresh_database_is_exactly_the_schema_module(empty_url):
    """Fails when ``conveyor/schema.py`` changes without a revision that makes the change."""
    engine = make_engine(empty_url)
    applied = init_db(engine, control=True)
    assert [a.split(" (")[0] for a in applied] == ["jobs 0001", "jobs 0002", "jobs 0003", "control c0001"]
    assert migrate.differences(engine, control=True) == []
    assert set(inspect(engine).get_table_names()) == set(metadata.tables) | set(control_metadata.tables) | {
        "conveyor_schema_version", "conveyor_control_schema_version"}
    assert init_db(engine, control=True) == []
    engine.dispose()


def test_a_plugin_history_creates_its_tables_and_a_core_only_database_lacks_them(empty_url):
    """The CAD plugin's ``cad`` history (``conveyor_migrations``): applied after ``jobs``, its own version table."""
    engine = make_engine(empty_url)
    assert [a.split(" (")[0] for a in init_db(engine)] == ["jobs 0001", "jobs 0002", "jobs 0003"]
    assert "conveyor_files" not in inspect(engine).get_table_names()
    assert [a.split(" (")[0] for a in init_db(engine, plugins=[CAD])] == ["cad cad0001"]
    assert migrate.current(engine, CAD) == "cad0001"
    assert {"conveyor_files", "conveyor_cad_schema_version"} <= set(inspect(engine).get_table_names())
    assert migrate.differences(engine, plugins=[CAD]) == []
    assert init_db(engine, plugins=[CAD]) == []
    engine.dispose()


def test_the_drift_check_sees_a_missing_index_and_an_extra_column(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/drift.db")
    init_db(engine, plugins=[CAD])
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_conveyor_jobs_file_id"))
        conn.execute(text("ALTER TABLE conveyor_files ADD COLUMN colour VARCHAR(10)"))
    found = {(d[0], getattr(d[1], "name", None) if not isinstance(d[1], str) else d[1])
             for d in migrate.differences(engine, plugins=[CAD]) if isinstance(d, tuple)}
    assert ("add_index", "ix_conveyor_jobs_file_id") in found
    assert any(kind == "remove_column" for kind, _ in found)
    engine.dispose()


def test_a_database_made_by_create_all_before_migrations_is_taken_over(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/dev.db")
    metadata.create_all(engine)
    control_metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO conveyor_tenants (tenant, org, created_at) VALUES ('acme', '', :t)"),
                     {"t": T0})
    applied = init_db(engine, control=True)
    assert [a.split(" (")[0] for a in applied] == ["jobs 0001", "jobs 0002", "jobs 0003", "control c0001"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT tenant FROM conveyor_tenants")).scalars().all() == ["acme"]
    assert migrate.differences(engine, control=True) == []
    engine.dispose()


def test_processes_upgrading_at_once_apply_each_revision_once(pg_empty_url):
    """PostgreSQL's advisory lock (SQLite has one writer at a time by design)."""
    empty_url = pg_empty_url
    code = ("import sys, json; from conveyor.db import init_db, make_engine; "
            "print(json.dumps(init_db(make_engine(sys.argv[1]))))")
    procs = [subprocess.Popen([sys.executable, "-c", code, empty_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, stdin=subprocess.DEVNULL) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    assert sorted(len(json.loads(out)) for out, _ in outs) == [0, 0, 0, 3]
    engine = make_engine(empty_url)
    assert migrate.current(engine) == "0003" and migrate.differences(engine) == []
    # and threads of one process, one after the other
    threads = [threading.Thread(target=init_db, args=(engine,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    engine.dispose()


def test_a_database_a_newer_release_upgraded_is_refused_with_the_reason(tmp_path):
    url = f"sqlite:///{tmp_path}/newer.db"
    engine = make_engine(url)
    init_db(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE conveyor_schema_version SET version_num = '0099'"))
    with pytest.raises(SchemaTooNew, match="a newer Conveyor upgraded it"):
        init_db(engine)
    for args, code in ((("db", "upgrade"), 1), (("db", "status"), 1), (("jobs", "list"), 2)):
        r = _cli(url, *args, cwd=tmp_path)
        assert r.returncode == code and "Traceback" not in r.stderr, (args, r.stderr)
        assert "revision '0099'" in r.stderr and "run that release" in r.stderr, r.stderr
    engine.dispose()


def test_the_cheap_head_constants_are_the_scripts_heads():
    for history in (migrate.JOBS, migrate.CONTROL, CAD):
        assert history.head == migrate.head(history), history.name
