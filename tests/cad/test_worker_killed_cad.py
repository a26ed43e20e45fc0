"""kill -9 of a worker mid-conversion: the conversion's box dies with it, the next worker sweeps what it left,
and converts the file. Real `conveyor worker` processes and the real CAD isolation."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cad_support import TEST_PLUGINS, cad_env

from conveyor.app import Conveyor
from conveyor.config import load_settings
from conveyor.plugins import load_plugins
from conveyor_cad.files import add_file, get_file
from conveyor_sandbox.native import cgroup_layout
from conveyor_sandbox.workspace import workspace_root

from pipeline_support import box_pids

HERE = Path(__file__).resolve().parent


def _leftovers(pid: int, before: set[str]) -> list[str]:
    out = [d for d in glob.glob(os.path.join(tempfile.gettempdir(), "conveyor-cad-*")) if d not in before]
    layout = cgroup_layout()
    for parent in (layout.v2_dir, layout.v1_memory_dir, layout.v1_pids_dir):
        if parent and os.path.isdir(parent):
            out += [n for n in os.listdir(parent) if n.startswith(f"conveyor-sbx-{pid}-")]
    root = workspace_root()
    if root.is_dir():
        out += [p.name for p in root.iterdir() if p.name.startswith(f"ws-{pid}-")]
    return out


def test_a_killed_worker_leaves_no_conversion_box_and_the_next_converts(tmp_path, meshes):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
           **cad_env(f"sqlite:///{tmp_path}/c.db", tmp_path), "CONVEYOR_LEASE_SECONDS": "3",
           "CONVEYOR_RECLAIM_GRACE_SECONDS": "1", "CONVEYOR_HEARTBEAT_SECONDS": "1", "CAD_TEST_SLOW_SECONDS": "600",
           "CONVEYOR_CONFIG": "", "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent / "plugins"),
                                                                 os.environ.get("PYTHONPATH", "")])}
    app = Conveyor(load_settings(env=env), plugins=load_plugins(TEST_PLUGINS))
    app.init_db()
    a = add_file(app, meshes["box.off"], convert=False)
    job = app.submit("cad.convert", {"file_id": a.file.id, "converter": "test.slow"})
    from conveyor.outbox import Dispatcher, run_until_empty
    run_until_empty(Dispatcher(app.store, app.queue))
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "conveyor-cad-*")))
    procs = []

    def worker(extra: dict[str, str]) -> subprocess.Popen:
        log = open(tmp_path / f"w{len(procs)}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", "conveyor", "worker", "--concurrency", "1", "--name",
                              f"w{len(procs)}-{uuid.uuid4().hex[:6]}"], env={**env, **extra}, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=log)
        procs.append(p)
        return p

    try:
        first = worker({})
        deadline = time.monotonic() + 60
        while not box_pids():
            assert time.monotonic() < deadline and first.poll() is None, \
                (tmp_path / "w0.log").read_text()[-2000:]
            time.sleep(0.05)
        time.sleep(0.5)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = time.monotonic()
        while box_pids() and time.monotonic() < killed_at + 3 + 1 + 5:
            time.sleep(0.05)
        assert box_pids() == [], "the conversion outlived its worker"
        worker({"CAD_TEST_SLOW_SECONDS": "0.2"})  # the next worker: sweeps at start, then converts
        done = app.wait(job, timeout=90)
        assert done.status.value == "succeeded" and done.attempts == 2, (done.error_code, done.last_error)
        assert get_file(app.engine, a.file.id).conversion_status == "done"
        assert _leftovers(first.pid, before) == []
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        app.close()
        app.engine.dispose()
