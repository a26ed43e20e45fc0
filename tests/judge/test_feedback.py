"""What a submitter sees: the hidden answer and test data never, unless the problem's policy says first_difference."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conveyor_judge.kind import admin_key
from conveyor_judge.problems import ProblemStore
from conveyor_judge.selftest import aplusb_package

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

A, B = 1092814357813179447, 1
ANSWER = str(A + B)  # 1092814357813179448: what one test at a time used to give away
INPUT = f"{A} {B}"
WRONG = "#include <stdio.h>\nint main(void){puts(\"1\");return 0;}\n"
#: prints its whole input on stdout and stderr, then fails: the test data must not come back either
ECHO = ('#include <stdio.h>\nint main(void){char b[256];while(fgets(b,sizeof b,stdin)){fputs(b,stdout);'
        'fputs(b,stderr);}return 3;}\n')


def leaks(text: str, secret: str, shortest: int = 6) -> list[str]:
    """Every substring of ``secret`` at least ``shortest`` long that occurs in ``text``."""
    return sorted({secret[i:j] for i in range(len(secret)) for j in range(i + shortest, len(secret) + 1)
                   if secret[i:j] in text}, key=len)[-3:]


def _problem(app, toml: str = "") -> str:
    return ProblemStore(app.storage).add(aplusb_package(toml + "time_limit_ms = 1000\n", tests=((A, B),))).id


def _judge(app, pipeline, pid: str, source: str) -> tuple[str, dict]:
    job_id = app.submit("judge.submission", {"problem_id": pid, "language": "c", "source": source})
    with pipeline(concurrency=1) as p:
        job = p.wait([job_id], timeout=120)[0]
    assert job.status.value == "succeeded", (job.error_code, job.last_error)
    return job_id, job.result


def test_default_policy_keeps_the_answer_and_the_input_out_of_the_job_result(app, pipeline, monkeypatch):
    monkeypatch.delenv("CONVEYOR_JUDGE_FEEDBACK", raising=False)
    pid = _problem(app)
    _, result = _judge(app, pipeline, pid, WRONG)
    text = json.dumps(result)
    assert result["verdict"] == "wrong_answer" and result["feedback"] == "verdict+time"
    assert leaks(text, ANSWER) == [] and leaks(text, INPUT) == [], text
    row = result["tests"][0]
    assert row["verdict"] == "wrong_answer" and "time_ms" in row and "output_preview" not in row
    assert result["message"] == "test 1: Wrong Answer"
    # the program's own output and stderr can carry the input out: not shown either
    _, echoed = _judge(app, pipeline, pid, ECHO)
    text = json.dumps(echoed)
    assert echoed["verdict"] == "runtime_error" and echoed["tests"][0]["message"] == "exit code 3"
    assert leaks(text, INPUT) == [] and leaks(text, ANSWER) == [], text


def test_the_checker_message_is_kept_for_operators_only(app, pipeline):
    from conveyor.diagnostics import diagnose
    pid = _problem(app)
    job_id, result = _judge(app, pipeline, pid, WRONG)
    job = app.get(job_id)
    admin = json.loads(app.storage.get(admin_key(job_id, job.attempt_id)))
    assert ANSWER in admin["tests"][0]["message"] and ANSWER in admin["message"]
    assert ANSWER not in json.dumps(result)
    found = {f["check"]: f for f in diagnose(app, job_id)["findings"]}
    assert ANSWER in found["judge admin message"]["detail"]


def test_first_difference_shows_the_checker_message(app, pipeline, monkeypatch):
    monkeypatch.delenv("CONVEYOR_JUDGE_FEEDBACK", raising=False)
    pid = _problem(app, 'feedback = "first_difference"\n')
    _, result = _judge(app, pipeline, pid, WRONG)
    assert result["feedback"] == "first_difference"
    assert ANSWER in result["tests"][0]["message"] and ANSWER in result["message"]
    assert result["tests"][0]["output_preview"] == "1\n"


def test_the_deployment_policy_and_a_problem_override(app, pipeline, monkeypatch):
    pid = _problem(app)
    monkeypatch.setenv("CONVEYOR_JUDGE_FEEDBACK", "first_difference")
    _, result = _judge(app, pipeline, pid, WRONG)
    assert ANSWER in result["message"]
    monkeypatch.setenv("CONVEYOR_JUDGE_FEEDBACK", "verdict")
    _, result = _judge(app, pipeline, pid, WRONG)
    assert result["feedback"] == "verdict" and result["tests"] == [{"name": "1", "verdict": "wrong_answer",
                                                                    "score": 0.0}]
    assert "time_ms" not in result and leaks(json.dumps(result), ANSWER) == []
    # `problem add --feedback` wins over the deployment's policy
    over = ProblemStore(app.storage).add(aplusb_package("time_limit_ms = 999\n", tests=((A, B),)),
                                         feedback="verdict+time")
    _, result = _judge(app, pipeline, over.id, WRONG)
    assert result["feedback"] == "verdict+time" and "time_ms" in result["tests"][0]
    monkeypatch.setenv("CONVEYOR_JUDGE_FEEDBACK", "everything")  # a typo gives the strictest, never more
    _, result = _judge(app, pipeline, pid, WRONG)
    assert result["feedback"] == "verdict"


def test_a_bad_policy_in_a_package_is_refused(app):
    from conveyor_judge.errors import JudgeError
    with pytest.raises(JudgeError) as exc:
        ProblemStore(app.storage).add(aplusb_package('feedback = "all"\n'))
    assert exc.value.code == "invalid_problem_package" and "first_difference" in exc.value.message


def test_cli_submit_prints_no_part_of_the_answer(app, env, pipeline, tmp_path, monkeypatch):
    monkeypatch.delenv("CONVEYOR_JUDGE_FEEDBACK", raising=False)
    pid = _problem(app)
    (tmp_path / "wa.c").write_text(WRONG)
    full = dict(os.environ)
    full.update({k: v for k, v in env.items() if k != "CONVEYOR_PLUGINS"})
    full.pop("CONVEYOR_JUDGE_FEEDBACK", None)
    with pipeline(concurrency=1):
        for extra in ([], ["--json"]):
            r = subprocess.run([sys.executable, "-m", "conveyor", "judge", "submit", "--problem", pid,
                                str(tmp_path / "wa.c"), "--wait", *extra], env=full, capture_output=True, text=True,
                               timeout=180, cwd=tmp_path, stdin=subprocess.DEVNULL)
            assert r.returncode == 0, r.stderr
            assert "wrong_answer" in r.stdout
            assert leaks(r.stdout + r.stderr, ANSWER) == [] and leaks(r.stdout + r.stderr, INPUT) == [], r.stdout
