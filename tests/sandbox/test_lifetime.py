"""Nothing outlives its owner; a flood ends at the output cap.

The owner is killed for real (SIGKILL of a Python process holding a running box); what the
box runs is found afterwards by a marker in its command line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conveyor_sandbox.contract import Limits, Status
from conveyor_sandbox.fallback import PythonSandbox
from conveyor_sandbox.native import CSandbox, cgroup_layout
from conveyor_sandbox.sweep import sweep

from .conftest import PYTHON

FLOODS = {
    "stdout": ["/bin/sh", "-c", "yes flood"],
    "stderr": ["/bin/sh", "-c", "yes flood >&2"],
    "both": ["/bin/sh", "-c", "yes out & yes err >&2; wait"],
    "python": [PYTHON, "-I", "-c", "import sys\nwhile True: sys.stdout.write('x' * 4096)"],
}


@pytest.mark.parametrize("kind", sorted(FLOODS))
@pytest.mark.parametrize("backend", ["c", "fallback"])
def test_a_flood_ends_output_limit_at_the_cap(c_sandbox: CSandbox, py_sandbox: PythonSandbox, workdir: Path,
                                              kind: str, backend: str) -> None:
    """Killed as soon as a stream passes the cap, not at the cpu limit (5 s here)."""
    sb = c_sandbox if backend == "c" else py_sandbox
    r = sb.run(FLOODS[kind], limits=Limits(cpu_ms=5000, output_bytes=64), workdir=workdir)
    assert r.status is Status.OUTPUT_LIMIT, r
    assert r.cpu_ms < 500 and r.wall_ms < 2000, r
    assert "output_kill" in r.enforced


def test_a_file_past_its_size_limit_ends_output_limit(c_sandbox: CSandbox, workdir: Path) -> None:
    """C programs die of SIGXFSZ; Python ignores it and gets EFBIG: both end output_limit."""
    prog = "f = open('big', 'wb')\nwhile True: f.write(b'x' * 65536); f.flush()\n"
    r = c_sandbox.run([PYTHON, "-I", "-c", prog], limits=Limits(cpu_ms=5000, file_size_kib=1024), workdir=workdir)
    assert r.status is Status.OUTPUT_LIMIT, r
    r = c_sandbox.run(["/bin/sh", "-c", "yes > big"], limits=Limits(cpu_ms=5000, file_size_kib=1024),
                      workdir=workdir)
    assert r.status is Status.OUTPUT_LIMIT, r
    assert r.cpu_ms < 500, r


def test_without_output_kill_a_flood_is_cut_and_the_program_goes_on(c_sandbox: CSandbox, workdir: Path) -> None:
    r = c_sandbox.run(["/bin/sh", "-c", "head -c 100000 /dev/zero; echo done >&2"],
                      limits=Limits(cpu_ms=5000, output_bytes=64, output_kill=False), workdir=workdir)
    assert r.status is Status.OUTPUT_LIMIT and r.stdout_len == 100000 and r.stderr == b"done\n", r


OWNER = r"""
import sys
from conveyor_sandbox.contract import Limits
from conveyor_sandbox.native import CSandbox
print("running", flush=True)
CSandbox().run(sys.argv[2:], limits=Limits(cpu_ms=60_000, wall_ms=120_000, pids=64), workdir=sys.argv[1])
"""

PROGRAMS = {
    "sleeping": ["/bin/sleep", "{marker}"],
    "spinning": ["/bin/sh", "-c", "while :; do :; done", "{marker}"],
    "forking": ["/bin/sh", "-c", "for i in 1 2 3 4; do (while :; do sleep 0.1; done) & done; wait", "{marker}"],
}


def _with_marker(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


@pytest.mark.parametrize("kind", sorted(PROGRAMS))
def test_a_box_dies_with_its_owner_and_the_sweep_removes_its_cgroups(tmp_path: Path, kind: str) -> None:
    marker = f"{1000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"  # a valid sleep argument
    argv = [a.format(marker=marker) for a in PROGRAMS[kind]]
    wd = tmp_path / "box"
    wd.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(wd), *argv], stdout=subprocess.PIPE,
                             env={**os.environ, "CONVEYOR_SANDBOX_SPARES": "0"})
    assert owner.stdout is not None and owner.stdout.readline() == b"running\n"
    deadline = time.monotonic() + 10
    while not _with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _with_marker(marker), "the box never started"
    time.sleep(0.2)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    deadline = time.monotonic() + 5
    while _with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _with_marker(marker) == [], f"the {kind} program outlived its owner"
    report = sweep()
    layout = cgroup_layout()
    prefix = f"conveyor-sbx-{owner.pid}-"
    for parent in (layout.v2_dir, layout.v1_memory_dir, layout.v1_pids_dir):
        if parent:
            assert not [n for n in os.listdir(parent) if n.startswith(prefix)], parent
    assert any(prefix in cg for cg in report.cgroups), report
