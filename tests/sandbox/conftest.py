"""Fixtures of the sandbox tests: compiled attack programs, backends, leak checks."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor_sandbox.common import BOX_UID_BASE, BOX_UID_COUNT
from conveyor_sandbox.fallback import PythonSandbox
from conveyor_sandbox.native import CSandbox, cgroup_layout, flush

PROGRAMS = Path(__file__).parent / "programs"
PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"


def _stat(pid: int) -> tuple[str, int]:
    """(comm, ppid) of a process as the host sees it."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    comm = text[text.index("(") + 1:text.rindex(")")]
    return comm, int(text[text.rindex(")") + 2:].split()[1])


def _is_box_uid(pid: int) -> bool:
    return BOX_UID_BASE <= os.stat(f"/proc/{pid}").st_uid < BOX_UID_BASE + BOX_UID_COUNT


def _in_foreign_box(pid: int) -> bool:
    """True when pid was started by another process on this host (a concurrent user's box).

    Ours: its first ancestor outside the box uids is this process, a sandbox helper this
    process started, or init (an orphan that escaped: what the check is for).
    """
    me = os.getpid()
    try:
        for _ in range(64):
            if not _is_box_uid(pid):
                break
            pid = _stat(pid)[1]
        comm, ppid = _stat(pid)
        if comm.startswith("conveyor-sandbo"):
            return ppid != me
        return pid not in (me, 1)
    except (OSError, ValueError):
        return False


def _chain(pid: int) -> list[str]:
    """comm:pid of a process and its ancestors, for failure messages."""
    out = []
    try:
        for _ in range(16):
            comm, ppid = _stat(pid)
            out.append(f"{comm}:{pid}")
            if ppid <= 1:
                break
            pid = ppid
    except (OSError, ValueError):
        pass
    return out


def box_processes() -> list[int]:
    """Pids running as any box uid, but for those inside other processes' boxes."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if BOX_UID_BASE <= os.stat(f"/proc/{entry}").st_uid < BOX_UID_BASE + BOX_UID_COUNT:
                    found.append(int(entry))
            except OSError:
                pass
    return [p for p in found if not _in_foreign_box(p)]


def run_cgroups() -> list[str]:
    """Run cgroups left behind by this process."""
    layout = cgroup_layout()
    left = []
    for d in (layout.v2_dir, layout.v1_memory_dir, layout.v1_pids_dir):
        if d:
            left += [os.path.join(d, n) for n in os.listdir(d) if n.startswith(f"conveyor-sbx-{os.getpid()}-")]
    return left


@pytest.fixture(scope="session")
def bindir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The attack programs, compiled once, in a directory the box can read and execute."""
    d = tmp_path_factory.mktemp("sandbox-programs")
    d.chmod(0o755)
    for src in sorted(PROGRAMS.glob("*.c")):
        out = d / src.stem
        subprocess.run(["cc", "-O1", "-pthread", "-o", str(out), str(src)], check=True)
        out.chmod(0o755)
    return d


@pytest.fixture(scope="session")
def c_sandbox() -> CSandbox:
    sb = CSandbox()
    ok, why = sb.available()
    assert ok, f"the C sandbox must load on this host: {why}"
    return sb


@pytest.fixture(scope="session")
def py_sandbox() -> PythonSandbox:
    return PythonSandbox()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "box"
    d.mkdir()
    return d


@pytest.fixture(autouse=True)
def nothing_left() -> Iterator[None]:
    """Every test ends with no box process and no run cgroup left."""
    yield
    import time

    deadline = time.monotonic() + 2
    while box_processes() and time.monotonic() < deadline:
        time.sleep(0.02)
    left = box_processes()
    assert left == [], f"a box process outlived its run: {[_chain(p) for p in left]}"
    flush()  # finished boxes are cleaned up in the background: wait for it, drop the spares
    assert run_cgroups() == [], "a run cgroup was left behind"
