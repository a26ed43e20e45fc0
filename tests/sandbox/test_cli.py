"""`conveyor sandbox run` and `conveyor sandbox doctor`."""

from __future__ import annotations

import json

from click.testing import CliRunner

from conveyor_sandbox.cli import sandbox


def test_run_json() -> None:
    res = CliRunner().invoke(sandbox, ["run", "--time-limit", "500", "--json", "--", "/bin/echo", "hi"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["status"] == "ok" and d["stdout"] == "hi\n" and d["backend"] == "c-sandbox"


def test_run_limit_exit_code_and_summary() -> None:
    res = CliRunner().invoke(sandbox, ["run", "--time-limit", "200", "--", "/bin/sh", "-c", "while :; do :; done"])
    assert res.exit_code == 1
    assert "status=time_limit" in res.output


def test_run_bad_arguments_are_messages_not_tracebacks() -> None:
    for args in (["run", "--time-limit", "-5", "--", "/bin/true"], ["run"],
                 ["run", "--workdir", "/nonexistent-dir", "--", "/bin/true"], ["run", "--backend", "nope", "--", "x"]):
        res = CliRunner().invoke(sandbox, args)
        assert res.exit_code == 2 or res.exit_code == 1, (args, res.output)
        assert ("Traceback" not in res.output and res.exception is None) or isinstance(res.exception, SystemExit)


def test_doctor_json_without_attacks() -> None:
    res = CliRunner().invoke(sandbox, ["doctor", "--no-attacks", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["chosen"] == "c-sandbox"
    assert d["kernel"]["namespaces"]["pid"] and "kill_process" in d["kernel"]["seccomp_actions"]
    assert set(d["backends"]) >= {"c-sandbox", "python-fallback"}


def test_doctor_runs_attacks() -> None:
    res = CliRunner().invoke(sandbox, ["doctor"])
    assert res.exit_code == 0, res.output
    assert "0 not contained" in res.output
