"""Start-up cost of a sandboxed /bin/true: Conveyor's C sandbox against bare fork+exec and others.

    python benchmarks/sandbox.py [--runs 500]

Prints the mean per run and the ratio to bare ``subprocess.run`` from a small parent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable

from conveyor.sandbox import Limits
from conveyor_sandbox.fallback import PythonSandbox
from conveyor_sandbox.native import CSandbox


def timed(fn: Callable[[], object], runs: int) -> float:
    """Mean seconds per call after one warm-up call."""
    fn()
    t0 = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - t0) / runs


def main() -> None:
    """Run every contender and print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--ballast-gib", type=float, default=2.0, help="memory the 'large parent' rows hold")
    args = ap.parse_args()
    n = args.runs
    wd = tempfile.mkdtemp(prefix="conveyor-bench-")
    lim = Limits(cpu_ms=1000)
    c = CSandbox()
    ok, why = c.available()
    rows: list[tuple[str, float | None, str]] = []

    def bare() -> object:
        return subprocess.run(["/bin/true"], check=True)

    rows.append(("bare subprocess.run", timed(bare, n), ""))
    if ok:
        rows.append(("conveyor C sandbox", timed(lambda: c.run(["/bin/true"], workdir=wd, limits=lim), n), ""))
    else:
        rows.append(("conveyor C sandbox", None, why))
    rows.append(("conveyor Python fallback",
                 timed(lambda: PythonSandbox().run(["/bin/true"], workdir=wd, limits=lim), n), ""))
    bwrap = shutil.which("bwrap")
    if bwrap:
        cmd = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
               "--unshare-all", "--die-with-parent", "/bin/true"]
        rows.append(("bubblewrap --unshare-all", timed(lambda: subprocess.run(cmd, check=True), n), ""))
    else:
        rows.append(("bubblewrap", None, "not installed (apt-get install bubblewrap)"))
    firejail = shutil.which("firejail")
    if firejail:
        cmd = [firejail, "--quiet", "--noprofile", "--net=none", "/bin/true"]
        rows.append(("firejail --net=none", timed(lambda: subprocess.run(cmd, check=True,
                                                                         stdout=subprocess.DEVNULL,
                                                                         stderr=subprocess.DEVNULL), n), ""))
    else:
        rows.append(("firejail", None, "not installed (apt-get install firejail)"))

    ballast = b"\x01" * int(args.ballast_gib * (1 << 30))  # touched: the parent really is large
    big = f"{args.ballast_gib:g} GiB parent"
    rows.append((f"bare subprocess.run, {big}", timed(bare, n), ""))
    if ok:
        rows.append((f"conveyor C sandbox, {big}",
                     timed(lambda: c.run(["/bin/true"], workdir=wd, limits=lim), n), ""))
    del ballast
    shutil.rmtree(wd, ignore_errors=True)

    base = rows[0][1] or 1.0
    print(f"/bin/true x {n}, pid {os.getpid()}")
    print(f"{'contender':<40} {'ms/run':>8} {'x bare':>8}")
    for name, secs, note in rows:
        if secs is None:
            print(f"{name:<40} {'-':>8} {'-':>8}  {note}")
        else:
            print(f"{name:<40} {secs * 1000:8.2f} {secs / base:8.2f}")


if __name__ == "__main__":
    main()
