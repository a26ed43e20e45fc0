"""The CAD CLI as a user runs it, and the whole pipeline on PostgreSQL: add → worker → files show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import fsspec
import pytest
import trimesh
from cad_support import assert_png
from sqlalchemy import text

from conveyor.db import init_db, make_engine
from conveyor.schema import metadata
from conveyor_cad.samples import sample_path

PG_URL = os.environ.get("CONVEYOR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def run_cli(env, *args, timeout=240):
    proc = subprocess.run([sys.executable, "-m", "conveyor", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return proc


def cli_env(db_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update({"CONVEYOR_DB_URL": db_url, "CONVEYOR_STORAGE_URL": f"file://{tmp_path}/data",
                "CONVEYOR_QUEUE_URL": "sql", "CONVEYOR_STREAM_KEY": f"conveyor:cli:{uuid.uuid4().hex[:8]}",
                "CONVEYOR_CONFIG": str(tmp_path / "none.toml")})
    (tmp_path / "none.toml").write_text("")
    return env


@pytest.fixture
def pg_url(pg_schema):
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{pg_schema}"
    eng = make_engine(url)
    init_db(eng)
    with eng.begin() as c:
        c.execute(text(f"truncate {', '.join(t.name for t in metadata.sorted_tables)} restart identity"))
    eng.dispose()
    return url


def test_files_add_worker_then_files_show_on_postgresql(pg_url, tmp_path, cad_files):
    env = cli_env(pg_url, tmp_path)
    added = []
    for path in (sample_path("bracket.step"), cad_files["stl_spider_binary"], cad_files["dxf_relay"]):
        proc = run_cli(env, "files", "add", str(path), "--json")
        assert proc.returncode == 0, proc.stderr
        row = json.loads(proc.stdout)
        assert row["conversion_status"] == "pending" and row["job_id"]
        added.append(row)
    proc = run_cli(env, "run", "--burst", "--concurrency", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for row in added:
        proc = run_cli(env, "files", "show", row["id"], "--json")
        assert proc.returncode == 0, proc.stderr
        shown = json.loads(proc.stdout)
        assert shown["conversion_status"] == "done", shown["conversion_error"]
        assert shown["system_path"] == row["system_path"]
        with fsspec.open(shown["preview_url"], "rb") as fh:
            assert_png(fh.read())
        if shown["cad_format"] != "dxf":
            with fsspec.open(shown["geometry_url"], "rb") as fh:
                scene = trimesh.load(fh, file_type="glb", force="scene")
            assert sum(len(g.faces) for g in scene.geometry.values()) > 0
    step = json.loads(run_cli(env, "files", "show", added[0]["id"], "--json").stdout)
    assert step["attributes"]["bbox"]["size"] == pytest.approx([60.0, 45.0, 30.0], abs=0.01)
    assert step["attributes"]["volume"] == pytest.approx(25440.0, rel=1e-3)
    human = run_cli(env, "files", "show", added[0]["id"])
    assert "preview:" in human.stdout and "bracket.step" in human.stdout


def test_cad_convert_wait_json_prints_readable_urls(tmp_path):
    env = cli_env(f"sqlite:///{tmp_path}/c.db", tmp_path)
    proc = run_cli(env, "cad", "convert", str(sample_path("bracket.stl")), "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["job_status"] == "succeeded" and row["conversion_status"] == "done"
    assert {m["role"] for m in row["manifest"]} == {"geometry", "preview", "metadata"}
    with fsspec.open(row["geometry_url"], "rb") as fh:
        assert fh.read(4) == b"glTF"
    human = run_cli(env, "cad", "convert", str(sample_path("bracket.step")), "--wait")
    assert human.returncode == 0 and "geometry:" in human.stdout and "succeeded" in human.stdout


def test_cad_convert_of_a_bad_file_exits_nonzero_with_the_code(tmp_path):
    env = cli_env(f"sqlite:///{tmp_path}/c.db", tmp_path)
    bad = tmp_path / "broken.stl"
    bad.write_bytes(b"")
    proc = run_cli(env, "cad", "convert", str(bad), "--wait")
    assert proc.returncode == 1 and "empty_geometry" in proc.stdout and "Traceback" not in proc.stderr
    missing = run_cli(env, "files", "add", str(tmp_path / "nope.step"))
    assert missing.returncode != 0 and "no such file" in missing.stderr and "Traceback" not in missing.stderr
    unknown = run_cli(env, "files", "show", "no-such-id")
    assert unknown.returncode != 0 and "no file" in unknown.stderr


def test_cad_formats_lists_formats_and_converters(tmp_path):
    env = cli_env(f"sqlite:///{tmp_path}/c.db", tmp_path)
    proc = run_cli(env, "cad", "formats", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    by_fmt = {f["format"]: f for f in data["formats"]}
    assert by_fmt["step"]["converter"] == "brep" and by_fmt["stl"]["converter"] == "mesh"
    assert by_fmt["dxf"]["converter"] == "dxf" and by_fmt["dwg"]["supported"] is False
    assert {c["id"] for c in data["converters"]} >= {"mesh", "brep", "dxf", "dwg", "connector"}
    assert all(c["plugin"] == "cad" for c in data["converters"])


def test_errors_and_diagnose_know_the_cad_codes(tmp_path):
    env = cli_env(f"sqlite:///{tmp_path}/c.db", tmp_path)
    codes = {c["code"]: c for c in json.loads(run_cli(env, "errors", "--json").stdout)}
    assert "pip install 'conveyor-jobs[cad]'" in codes["missing_dependency"]["next_step"]
    assert codes["empty_geometry"]["retryable"] is False
    bad = tmp_path / "empty.obj"
    bad.write_bytes(b"")
    row = json.loads(run_cli(env, "cad", "convert", str(bad), "--wait", "--json").stdout)
    report = json.loads(run_cli(env, "diagnose", row["job_id"], "--json").stdout)
    found = {f["check"]: f for f in report["findings"]}
    assert found["cad source"]["storage_exists"] is True and found["cad source"]["latency_ms"] >= 0
    assert found["cad source"]["storage_path"] == row["system_path"]
    assert found["cad format"]["converter"] == "mesh" and found["cad format"]["cad_format"] == "obj"
    assert found["cad preview"]["exists"] is False
    assert "empty_geometry" in found["cad conversion"]["detail"]
    assert "empty_geometry" in report["cause"]


def test_demo_hook_converts_the_shipped_samples(cad_app, cad_pipeline):
    import io

    from rich.console import Console

    from conveyor_cad.demo import run
    out = io.StringIO()
    with cad_pipeline():
        assert run(cad_app, Console(file=out, width=200)) is True
    printed = out.getvalue()
    assert "bracket.step" in printed and "preview.png" in printed and "model.glb" in printed
    assert "60.0 x 45.0 x 30.0 mm" in printed


def test_doctor_checks_the_cad_libraries_and_the_connector(tmp_path):
    env = cli_env(f"sqlite:///{tmp_path}/c.db", tmp_path)
    env["CONVEYOR_CAD_CONNECTOR_URL"] = "http://127.0.0.1:9"
    proc = run_cli(env, "doctor", "--json")
    checks = {c["check"]: c for c in json.loads(proc.stdout)}
    for dist in ("trimesh", "cascadio", "ezdxf", "matplotlib"):
        assert checks[f"cad library {dist}"]["ok"] is True
    assert checks["cad connector"]["ok"] is False and "unreachable" in checks["cad connector"]["detail"]
    assert checks["cad connector"]["next_step"]


def test_file_text_from_hostile_names_and_converters_is_printed_escaped(capsys):
    """A file named with escape sequences, and a converter message in ANSI colours, reach the terminal escaped."""
    from conveyor_cad.cli import _print_file

    _print_file(None, {"id": "f1", "filename": "a\x1b]0;owned\x07.step", "size": 1, "cad_format": "step",
                       "conversion_status": "failed", "system_path": "file:///s/a\x1b[2J.step",
                       "conversion_error": {"code": "conversion_failed", "stage": "read", "converter": "occ",
                                            "message": "\x1b[31mStandard_Failure\x1b[0m"}})
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[31mStandard_Failure" in out


def test_a_conversion_submitted_by_hand_is_filed_under_its_file(tmp_path):
    """`conveyor submit cad.convert --payload '{"file_id": ...}'` sets the job's file_id, as an upload does, so the
    file's jobs and change log include it."""
    env = cli_env(f"sqlite:///{tmp_path}/c.db", tmp_path)
    assert run_cli(env, "db", "init").returncode == 0
    row = json.loads(run_cli(env, "files", "add", str(sample_path("bracket.step")), "--json").stdout)
    proc = run_cli(env, "submit", "cad.convert", "--payload", json.dumps({"file_id": row["id"]}))
    assert proc.returncode == 0, proc.stderr
    by_hand = proc.stdout.strip()
    listed = json.loads(run_cli(env, "jobs", "list", "--file-id", row["id"], "--json").stdout)
    assert {j["id"] for j in listed} == {row["job_id"], by_hand}
    assert all(j["file_id"] == row["id"] for j in listed)
