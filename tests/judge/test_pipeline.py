"""The judge job through the whole pipeline on PostgreSQL: submit → dispatcher → worker → result."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conveyor_judge.problems import ProblemStore
from conveyor_judge.selftest import aplusb_package, program
from conveyor_judge.sources import source_key

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def test_judge_jobs_through_the_pipeline_and_jobs_show(app, pipeline, env, tmp_path):
    pid = ProblemStore(app.storage).add(aplusb_package()).id
    key = source_key("default", "s1.rs")  # submissions/default/s1.rs: the tenant's own namespace
    app.storage.put(key, program("rust", "aplusb").encode())
    ids = [
        app.submit("judge.submission", {"problem_id": pid, "language": "cpp", "source": program("cpp", "aplusb")}),
        app.submit("judge.submission", {"problem_id": pid, "language": "rust", "source_key": key}),
        app.submit("judge.submission", {"problem_id": pid, "language": "java", "source": program("java", "tle")}),
        app.submit("judge.submission", {"problem_id": pid, "language": "c", "source": program("c", "ce")}),
        app.submit("judge.submission", {"problem_id": "feedfeedfeed", "language": "c", "source": "x"}),
        app.submit("judge.submission", {"problem_id": pid, "language": "cobol", "source": "x"}),
        app.submit("judge.submission", {"problem_id": pid}),
    ]
    from conveyor.metrics import enable
    registry = enable().registry

    def counted(language: str, verdict: str) -> float:
        return registry.get_sample_value("conveyor_judge_verdicts_total",
                                         {"language": language, "verdict": verdict}) or 0.0

    before = {(lang, v): counted(lang, v) for lang, v in (("cpp", "accepted"), ("java", "time_limit_exceeded"),
                                                         ("c", "compile_error"))}
    with pipeline(concurrency=2) as p:
        jobs = p.wait(ids, timeout=180)
    verdicts = [j.result["verdict"] if j.status.value == "succeeded" else j.error_code for j in jobs]
    assert verdicts == ["accepted", "accepted", "time_limit_exceeded", "compile_error", "problem_not_found",
                        "unknown_language", "invalid_payload"]
    assert {k: counted(*k) - v for k, v in before.items()} == dict.fromkeys(before, 1.0)
    assert (registry.get_sample_value("conveyor_judge_run_seconds_count", {"language": "cpp"}) or 0) >= 3
    assert all(j.attempts == 1 for j in jobs), "verdicts and bad input never retry"
    full = dict(os.environ)
    full.update({k: v for k, v in env.items() if k != "CONVEYOR_PLUGINS"})
    r = subprocess.run([sys.executable, "-m", "conveyor", "jobs", "show", ids[0], "--json"], env=full,
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["status"] == "succeeded" and shown["kind"] == "judge.submission"
    assert shown["result"]["verdict"] == "accepted" and len(shown["result"]["tests"]) == 3
    assert [e["action"] for e in shown["events"]] == ["submitted", "dispatched", "claimed", "succeeded"]
    assert "postgresql" in env["CONVEYOR_DB_URL"]


def test_diagnose_names_the_verdict_or_the_missing_problem(app, pipeline):
    from conveyor.diagnostics import diagnose
    pid = ProblemStore(app.storage).add(aplusb_package()).id
    good = app.submit("judge.submission", {"problem_id": pid, "language": "c", "source": program("c", "wa")})
    lost = app.submit("judge.submission", {"problem_id": "0badc0ffee00", "language": "c", "source": "x"})
    with pipeline(concurrency=2) as p:
        p.wait([good, lost], timeout=120)
    found = {f["check"]: f for f in diagnose(app, good)["findings"]}
    assert found["judge verdict"]["detail"].startswith("wrong_answer")
    found = {f["check"]: f for f in diagnose(app, lost)["findings"]}
    assert not found["judge problem"]["ok"] and "problem add" in found["judge problem"]["next_step"]
    assert found["judge language"]["ok"]
