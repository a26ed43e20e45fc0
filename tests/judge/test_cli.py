"""`conveyor judge …` as a user runs it: problem add, submit --wait, languages, self-test, doctor, demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conveyor_judge.selftest import aplusb_package, program
from tests.judge.conftest import make_zip


@pytest.fixture
def cli(env, app, tmp_path):
    def run(*args, check=True, timeout=180):
        full = dict(os.environ)
        full.update({k: v for k, v in env.items() if k != "CONVEYOR_PLUGINS"})
        r = subprocess.run([sys.executable, "-m", "conveyor", *args], env=full, capture_output=True, text=True,
                           timeout=timeout, cwd=tmp_path, stdin=subprocess.DEVNULL)
        if check:
            assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
        return r
    return run


@pytest.fixture
def problem_id(cli, tmp_path):
    (tmp_path / "aplusb.zip").write_bytes(aplusb_package())
    return cli("judge", "problem", "add", str(tmp_path / "aplusb.zip")).stdout.strip()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_problem_add_zip_and_dir_with_limit_overrides(cli, tmp_path, problem_id):
    assert len(problem_id) == 12
    d = tmp_path / "dirprob"
    (d / "tests").mkdir(parents=True)
    (d / "tests" / "1.in").write_text("1 1\n")
    (d / "tests" / "1.ans").write_text("2\n")
    info = json.loads(cli("judge", "problem", "add", str(d), "--time-limit", "1500", "--memory-limit", "128",
                          "--json").stdout)
    assert info["tests"] == 1 and info["time_limit_ms"] == 1500 and info["memory_limit_mib"] == 128
    listed = cli("judge", "problem", "list").stdout
    assert problem_id in listed and info["id"] in listed


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("files,code", [
    ({"1.in": "1"}, "invalid_problem_package"),
    ({"1.in": "1", "1.out": "1", "../x": "x"}, "unsafe_problem_package"),
])
def test_bad_package_is_a_clear_error_without_traceback(cli, tmp_path, files, code):
    (tmp_path / "bad.zip").write_bytes(make_zip(files))
    r = cli("judge", "problem", "add", str(tmp_path / "bad.zip"), check=False)
    assert r.returncode == 1 and code in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_submit_checks_problem_and_language_before_queueing(cli, tmp_path, problem_id, app):
    src = tmp_path / "sol.txt"
    src.write_text("print(1)")
    r = cli("judge", "submit", "--problem", problem_id, str(src), check=False)
    assert r.returncode == 2 and "unknown_language" in r.stderr and "--language" in r.stderr
    r = cli("judge", "submit", "--problem", "abcdef123456", "--language", "py", str(src), check=False)
    assert r.returncode == 2 and "problem_not_found" in r.stderr
    assert app.list_jobs() == []


def test_submit_wait_prints_table_and_json_with_the_verdict(cli, tmp_path, problem_id, pipeline):
    (tmp_path / "sol.cpp").write_text(program("cpp", "aplusb"))
    (tmp_path / "wa.py").write_text(program("python3", "wa"))
    with pipeline(concurrency=2):
        out = cli("judge", "submit", "--problem", problem_id, str(tmp_path / "sol.cpp"), "--wait").stdout
        assert "accepted" in out and "verdict: accepted" in out
        data = json.loads(cli("judge", "submit", "--problem", problem_id, str(tmp_path / "wa.py"), "--wait",
                              "--json").stdout)
    assert data["verdict"] == "wrong_answer" and data["language"] == "python3" and len(data["tests"]) == 1
    assert data["tests"][0]["verdict"] == "wrong_answer" and data["compile"]["ok"]


def test_compiler_output_quoting_escape_sequences_is_printed_escaped(cli, tmp_path, problem_id, pipeline):
    """A submission's #error text comes back in the compiler's output: its ESC never reaches the terminal."""
    (tmp_path / "evil.c").write_text('#error "\x1b]0;owned\x07\x1b[2J"\nint main(void) { return 0; }\n')
    with pipeline(concurrency=1):
        r = cli("judge", "submit", "--problem", problem_id, str(tmp_path / "evil.c"), "--wait", check=False)
    assert "compile_error" in r.stdout
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "\\x1b" in r.stdout  # shown, escaped


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_submit_wait_without_a_worker_says_so_within_seconds(cli, tmp_path, problem_id):
    """Nobody serves the queue: the wait names that and how to start a worker, long before its timeout."""
    (tmp_path / "sol.py").write_text(program("python3", "aplusb"))
    r = cli("judge", "submit", "--problem", problem_id, str(tmp_path / "sol.py"), "--wait", "--timeout", "6",
            check=False)
    assert r.returncode != 0
    assert "no live worker serves the queue" in r.stderr and "conveyor worker" in r.stderr
    assert r.stderr.index("no live worker") < r.stderr.index("still queued")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_submit_without_wait_prints_the_job_id(cli, tmp_path, problem_id, app):
    (tmp_path / "a.c").write_text(program("c", "aplusb"))
    job_id = cli("judge", "submit", "--problem", problem_id, str(tmp_path / "a.c")).stdout.strip()
    job = app.get(job_id)
    assert job.kind == "judge.submission" and job.payload["language"] == "c"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_languages_lists_every_first_party_language(cli):
    rows = {r["id"]: r for r in json.loads(cli("judge", "languages", "--json").stdout)}
    assert {"c", "cpp", "cpp20", "python3", "java", "rust", "javascript"} <= set(rows)
    assert "1" in rows["cpp"]["aliases"]
    assert all(r["available"] for r in rows.values()), rows


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_self_test_checks_every_verdict_type(cli):
    rows = json.loads(cli("judge", "self-test", "--language", "c", "--language", "python3", "--json").stdout)
    got = {r["got"] for r in rows}
    assert all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]
    assert got == {"accepted", "wrong_answer", "presentation_error", "time_limit_exceeded", "memory_limit_exceeded",
                   "output_limit_exceeded", "runtime_error", "compile_error", "system_error"}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_doctor_reports_each_language_and_a_missing_toolchain_without_crashing(cli):
    r = cli("doctor", "--json", check=False)
    checks = {c["check"]: c for c in json.loads(r.stdout)}
    assert checks["judge java"]["detail"].startswith("available")
    full = dict(os.environ, CONVEYOR_JUDGE_PATH="/nonexistent")
    r2 = subprocess.run([sys.executable, "-m", "conveyor", "judge", "languages"], env=full, capture_output=True,
                        text=True, timeout=60)
    assert r2.returncode == 0 and "UNAVAILABLE: gcc not found" in r2.stdout and "Traceback" not in r2.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_demo_judges_three_submissions(cli):
    # the exit code also reflects other plugins' demo parts: judge only this plugin's table
    r = cli("demo", "--jobs", "5", timeout=300, check=False)
    assert "judge.submission on problem" in r.stdout, r.stdout + r.stderr
    part = r.stdout.split("judge.submission on problem", 1)[1]
    for verdict in ("accepted", "wrong_answer", "time_limit_exceeded"):
        assert part.count(f" {verdict} ") == 2, part  # got and expected columns agree
