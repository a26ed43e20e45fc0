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
    view = d["box_view"]
    assert not {"var", "home", "root", "srv", "opt", "sys"} & set(view["/"]), view["/"]
    assert "ptmx" not in view["/dev"] and "shadow" not in view["/etc"]
    mounts = {m["path"]: m["options"].split(",") for m in view["mounts"]}
    assert "ro" in mounts["/"] and "ro" in mounts["/usr"] and "nodev" in mounts["/usr"]
    assert view["workdir_bounded"]


def test_run_uses_a_bounded_workspace_and_removes_it() -> None:
    res = CliRunner().invoke(sandbox, ["run", "--json", "--", "/bin/sh", "-c", "pwd; df -k . | tail -1"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert "bounded_workdir" in d["enforced"]
    where = d["stdout"].splitlines()[0]
    import os
    assert not os.path.exists(where)


def test_doctor_runs_attacks() -> None:
    res = CliRunner().invoke(sandbox, ["doctor"])
    assert res.exit_code == 0, res.output
    assert "0 not contained" in res.output


def test_conveyor_doctor_names_the_chosen_backend(tmp_path) -> None:
    import json
    import os
    import subprocess
    import sys
    env = {**os.environ, "CONVEYOR_DB_URL": f"sqlite:///{tmp_path}/d.db", "CONVEYOR_STORAGE_URL": f"file://{tmp_path}/s"}
    subprocess.run([sys.executable, "-m", "conveyor", "db", "init"], env=env, check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-m", "conveyor", "doctor", "--json"], env=env, capture_output=True,
                         text=True, timeout=120)
    rows = {r["check"]: r for r in json.loads(out.stdout)}
    assert "(chosen)" in rows["sandbox c-sandbox"]["detail"] and rows["sandbox c-sandbox"]["ok"]
    assert "weak" in rows["sandbox python-fallback"]["detail"]
