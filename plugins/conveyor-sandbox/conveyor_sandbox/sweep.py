"""Remove what boxes of dead processes left: run cgroups (and any process still in them), workspaces.

A box dies with the thread that started it (the helper's parent-death signal), so a worker
killed with -9 leaves no running program; but its run cgroups and mounted workspaces stay,
named after its pid.  The first box a process runs, ``conveyor sandbox sweep`` and the
scheduler's GC call :func:`sweep`; it never raises, and reports what it removed.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from dataclasses import dataclass, field

from conveyor_sandbox.common import pid_alive
from conveyor_sandbox.workspace import sweep as sweep_workspaces

log = logging.getLogger("conveyor_sandbox.contract")

_RUN_CGROUP = re.compile(r"^conveyor-sbx-(\d+)-\d+$")


@dataclass
class SweepReport:
    """What a sweep removed, and what it could not."""

    cgroups: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    workspaces: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list]:
        """Plain-JSON form."""
        return {"cgroups": self.cgroups, "processes": self.processes, "workspaces": self.workspaces,
                "failed": self.failed}

    @property
    def removed(self) -> int:
        """How many things went."""
        return len(self.cgroups) + len(self.workspaces)


def _procs(cg: str) -> list[int]:
    try:
        with open(os.path.join(cg, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def _empty(cg: str, report: SweepReport) -> None:
    """Kill whatever is left in a cgroup (cgroup.kill where there is one) and wait for it to go."""
    pids = _procs(cg)
    if not pids:
        return
    report.processes += pids
    kill = os.path.join(cg, "cgroup.kill")
    try:
        with open(kill, "w") as f:
            f.write("1")
    except OSError:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    deadline = time.monotonic() + 2
    while _procs(cg) and time.monotonic() < deadline:
        time.sleep(0.01)


def sweep_cgroups(parents: list[str], report: SweepReport) -> None:
    """Empty and remove the run cgroups under ``parents`` whose creating process is gone."""
    for parent in parents:
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            m = _RUN_CGROUP.match(name)
            if not m or pid_alive(int(m.group(1))):
                continue
            cg = os.path.join(parent, name)
            _empty(cg, report)
            try:
                os.rmdir(cg)
                report.cgroups.append(cg)
            except FileNotFoundError:
                pass
            except OSError as exc:
                report.failed.append(f"{cg}: {exc.strerror}")


def sweep() -> SweepReport:
    """Remove run cgroups and workspaces whose owning process is gone; logs and returns what went."""
    from conveyor_sandbox.native import cgroup_layout

    report = SweepReport()
    if os.geteuid() != 0:
        return report
    layout = cgroup_layout()
    sweep_cgroups([d for d in (layout.v2_dir, layout.v1_memory_dir, layout.v1_pids_dir) if d], report)
    try:
        report.workspaces = sweep_workspaces()
    except OSError as exc:
        report.failed.append(f"workspaces: {exc}")
    if report.removed or report.failed:
        log.info("sandbox sweep: removed %d run cgroup(s) (%d process(es) killed) and %d workspace(s) of "
                 "dead processes%s", len(report.cgroups), len(report.processes), len(report.workspaces),
                 f"; could not remove: {', '.join(report.failed)}" if report.failed else "")
    return report
