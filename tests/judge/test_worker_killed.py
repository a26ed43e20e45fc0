"""kill -9 of a worker mid-judging: the box dies with it, the next worker on the host sweeps what it left,
and the submission is judged on that worker. Real `conveyor worker` processes, the real sandbox."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor_judge.problems import ProblemStore
from conveyor_judge.selftest import aplusb_package
from conveyor_sandbox.native import cgroup_layout
from conveyor_sandbox.workspace import workspace_root

from pipeline_support import box_pids

TESTS = Path(__file__).resolve().parent.parent
LEASE_S, GRACE_S = 3, 1

PROGRAMS = {
    "sleeping": "import time\ntime.sleep(600)\n",
    "spinning": "while True:\n    pass\n",
    "forking": ("import os, time\nfor _ in range(4):\n    try:\n        if os.fork() == 0:\n"
                "            while True:\n                time.sleep(0.1)\n    except OSError:\n        pass\n"
                "time.sleep(600)\n"),
}


@pytest.fixture
def deployment(tmp_path, judge_environment):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}, **judge_environment,
           "CONVEYOR_DB_URL": f"sqlite:///{tmp_path}/c.db", "CONVEYOR_QUEUE_URL": "sql",
           "CONVEYOR_STORAGE_URL": f"file://{tmp_path}/data", "CONVEYOR_LEASE_SECONDS": str(LEASE_S),
           "CONVEYOR_RECLAIM_GRACE_SECONDS": str(GRACE_S), "CONVEYOR_HEARTBEAT_SECONDS": "1",
           "CONVEYOR_CONFIG": str(tmp_path / "none.toml"), "CONVEYOR_SANDBOX_SPARES": "0"}
    (tmp_path / "none.toml").write_text("")
    app = Conveyor(load_settings(env=env))
    app.init_db()
    problem = ProblemStore(app.storage).add(
        aplusb_package("time_limit_ms = 2000\nmemory_limit_mib = 64\n", tests=((1, 2),))).id
    procs: list[subprocess.Popen] = []

    def worker(name: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", "conveyor", "worker", "--concurrency", "1", "--name", name],
                             env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log)
        procs.append(p)
        return p

    yield app, problem, worker
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    app.close()
    app.engine.dispose()


def _leftovers(pid: int) -> list[str]:
    """cgroups and workspaces a worker process of this pid made."""
    out = []
    layout = cgroup_layout()
    for parent in (layout.v2_dir, layout.v1_memory_dir, layout.v1_pids_dir):
        if parent and os.path.isdir(parent):
            out += [f"{parent}/{n}" for n in os.listdir(parent) if n.startswith(f"conveyor-sbx-{pid}-")]
    root = workspace_root()
    if root.is_dir():
        out += [str(p) for p in root.iterdir() if p.name.startswith(f"ws-{pid}-")]
    return out


@pytest.mark.parametrize("kind", sorted(PROGRAMS))
def test_a_killed_worker_leaves_no_box_and_the_job_is_judged_on_the_next(deployment, kind):
    app, problem, worker = deployment
    assert box_pids() == [], "a box of another test is still running"
    first = worker(f"w1-{uuid.uuid4().hex[:6]}")
    job = app.submit("judge.submission", {"problem_id": problem, "language": "python3", "source": PROGRAMS[kind]})
    from conveyor.outbox import Dispatcher, run_until_empty
    run_until_empty(Dispatcher(app.store, app.queue))
    deadline = time.monotonic() + 60
    while not box_pids():
        assert time.monotonic() < deadline and first.poll() is None, "the program never started in a box"
        time.sleep(0.05)
    assert app.get(job).status.value == "running"
    time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = time.monotonic()
    while box_pids() and time.monotonic() < killed_at + LEASE_S + GRACE_S + 5:
        time.sleep(0.05)
    assert box_pids() == [], f"the {kind} program outlived its worker"
    second = worker(f"w2-{uuid.uuid4().hex[:6]}")  # sweeps what the dead worker left when it starts
    done = app.wait(job, timeout=90)
    assert done.status.value == "succeeded" and done.attempts == 2, (done.status, done.error_code, done.last_error)
    assert done.result["verdict"] == "time_limit_exceeded"
    assert _leftovers(first.pid) == []
    assert second.poll() is None
