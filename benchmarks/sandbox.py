"""Start-up cost of a sandboxed /bin/true: Conveyor's C sandbox against bare fork+exec and others.

bubblewrap runs with the same allow-list root as the C sandbox (system directories,
the runtime files of /etc, a minimal /dev, /proc, a tmpfs /tmp, the work directory).

    python benchmarks/sandbox.py [--runs 500] [--batch 10] [--ballast-gib 2] [--baseline DIR]
    python benchmarks/sandbox.py --flood 5

Every contender runs in batches, and the batches are interleaved round-robin (the order
rotating every round), so load from other work on the host hits all of them alike.
Contenders run in worker processes: a small one, one holding ``--ballast-gib`` of touched
memory (the "large parent" rows), and one with the C sandbox's background preparation
turned off (``CONVEYOR_SANDBOX_SPARES=0``: every run makes and removes its own cgroups
and network namespace before it returns). A C sandbox batch ends only when its
background thread is idle again, so the work it moved off the critical path is still
inside the batch's time. Prints the mean per run, its ratio to bare ``subprocess.run``
from the small parent, and the worker's CPU time per run (its own and its children's;
kernel threads, e.g. network namespace cleanup, are not counted).

``--baseline DIR`` adds the C sandbox rows of another build of ``conveyor_sandbox``
(DIR is put first on ``PYTHONPATH``; e.g. an older commit's ``plugins`` directory with
its extension and helper built in place), interleaved with the rest: before/after in
one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

ALLOW_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ALLOW_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime")


def bwrap_args(wd: str) -> list[str]:
    """bubblewrap with the C sandbox's allow-list root: system dirs, runtime /etc, /dev, /proc, /tmp, work dir."""
    args = []
    for p in ALLOW_DIRS + ALLOW_ETC:
        if os.path.islink(p):
            args += ["--symlink", os.readlink(p), p]
        elif os.path.exists(p):
            args += ["--ro-bind", p, p]
    return [*args, "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--bind", wd, wd, "--chdir", wd,
            "--unshare-all", "--die-with-parent", "--new-session", "/bin/true"]
FIREJAIL = ["--quiet", "--noprofile", "--net=none", "/bin/true"]


def contenders(kind: str, wd: str) -> dict[str, Callable[[], object] | str]:
    """What a worker of this kind can run; a string says why a contender is missing."""
    from conveyor_sandbox.contract import Limits
    from conveyor_sandbox.fallback import PythonSandbox
    from conveyor_sandbox.native import CSandbox

    try:
        from conveyor_sandbox.native import flush
    except ImportError:  # a baseline build without background work
        flush = None

    lim = Limits(cpu_ms=1000)
    out: dict[str, Callable[[], object] | str] = {}

    def bare() -> object:
        return subprocess.run(["/bin/true"], check=True)

    out["bare"] = bare
    c = CSandbox()
    ok, why = c.available()
    if ok:
        def csb() -> object:
            r = c.run(["/bin/true"], workdir=wd, limits=lim)
            if not r.ok:
                raise RuntimeError(str(r))
            return r

        out["c"] = csb
        if flush is not None:
            out["c:settle"] = lambda: flush(drop_spares=False)
    else:
        out["c"] = why
    if kind not in ("small", "base"):
        return out
    if kind == "base":
        return {"c": out["c"]}
    fb = PythonSandbox()
    out["fallback"] = lambda: fb.run(["/bin/true"], workdir=wd, limits=lim)
    bwrap = shutil.which("bwrap")
    if bwrap:
        bw = [bwrap, *bwrap_args(wd)]
        out["bwrap"] = lambda: subprocess.run(bw, check=True)
    else:
        out["bwrap"] = "not installed (apt-get install bubblewrap)"
    firejail = shutil.which("firejail")
    if firejail:
        out["firejail"] = lambda: subprocess.run([firejail, *FIREJAIL], check=True, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL)
    else:
        out["firejail"] = "not installed (apt-get install firejail)"
    return out


def worker(kind: str, ballast_gib: float) -> None:
    """Serve 'name count' requests on stdin; answer with elapsed and cpu seconds as JSON."""
    ballast = b"\x01" * int(ballast_gib * (1 << 30)) if ballast_gib else b""  # touched: really large
    wd = tempfile.mkdtemp(prefix="conveyor-bench-")
    table = contenders(kind, wd)
    missing = {k: v for k, v in table.items() if isinstance(v, str)}
    print(json.dumps({"missing": missing, "ballast": len(ballast)}), flush=True)
    try:
        for line in sys.stdin:
            name, count = line.split()
            fn = table[name]
            assert callable(fn)
            settle = table.get(f"{name}:settle")
            fn()  # warm: lazy imports, the uid pool, the spares
            if callable(settle):
                settle()
            c0, t0 = os.times(), time.perf_counter()
            for _ in range(int(count)):
                fn()
            if callable(settle):
                settle()
            t1, c1 = time.perf_counter(), os.times()
            cpu = sum(c1[:4]) - sum(c0[:4])
            print(json.dumps({"elapsed": t1 - t0, "cpu": cpu}), flush=True)
    finally:
        shutil.rmtree(wd, ignore_errors=True)


ROWS = [
    # label, worker, contender
    ("bare subprocess.run", "small", "bare"),
    ("conveyor C sandbox", "small", "c"),
    ("conveyor C sandbox, no background prep", "sync", "c"),
    ("conveyor Python fallback", "small", "fallback"),
    ("bubblewrap, same allow-list root", "small", "bwrap"),
    ("firejail --net=none", "small", "firejail"),
    ("bare subprocess.run, {big} parent", "large", "bare"),
    ("conveyor C sandbox, {big} parent", "large", "c"),
    ("baseline C sandbox", "base", "c"),
    ("baseline C sandbox, {big} parent", "base-large", "c"),
]


def flood(runs: int) -> None:
    """CPU and wall per flooded run (``yes`` into a 64 KiB cap, 2 s cpu limit): killed at the cap against cut only."""
    from conveyor_sandbox.contract import Limits
    from conveyor_sandbox.native import CSandbox

    sb = CSandbox()
    wd = tempfile.mkdtemp(prefix="conveyor-bench-flood-")
    try:
        print(f"output flood: /bin/sh -c 'yes flood' x {runs}, 64 KiB cap, 2 s cpu limit")
        print(f"{'mode':<34} {'cpu ms/run':>10} {'wall ms/run':>11} {'status':>14}")
        rows = {}
        for label, kill in (("killed at the cap (output_kill)", True), ("cut only (before)", False)):
            cpu = wall = 0
            status = ""
            for _ in range(runs):
                r = sb.run(["/bin/sh", "-c", "yes flood"], workdir=wd,
                           limits=Limits(cpu_ms=2000, output_bytes=64 * 1024, output_kill=kill))
                cpu, wall, status = cpu + r.cpu_ms, wall + r.wall_ms, r.status.value
            rows[kill] = cpu / runs
            print(f"{label:<34} {cpu / runs:10.1f} {wall / runs:11.1f} {status:>14}")
        print(f"cpu per flooded run, before / after: {rows[False] / max(rows[True], 0.1):.0f}x")
    finally:
        shutil.rmtree(wd, ignore_errors=True)


def main() -> None:
    """Start the workers, interleave the contenders' batches, print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--batch", type=int, default=10, help="runs per contender per round")
    ap.add_argument("--ballast-gib", type=float, default=2.0, help="memory the 'large parent' rows hold")
    ap.add_argument("--baseline", metavar="DIR", help="also run the C sandbox of the build found in DIR")
    ap.add_argument("--flood", type=int, metavar="N", help="only the output-flood case, N runs of each mode")
    ap.add_argument("--worker", choices=["small", "sync", "large", "base", "base-large"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.flood:
        flood(args.flood)
        return
    if args.worker:
        worker("base" if args.worker == "base" else args.worker,
               args.ballast_gib if args.worker.endswith("large") else 0.0)
        return

    procs: dict[str, subprocess.Popen[str]] = {}
    missing: dict[str, dict[str, str]] = {}
    kinds = ["small", "sync", "large"] + (["base", "base-large"] if args.baseline else [])
    for kind in kinds:
        env = dict(os.environ)
        if kind == "sync":
            env["CONVEYOR_SANDBOX_SPARES"] = "0"
        if kind.startswith("base"):
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.baseline, env.get("PYTHONPATH")]))
        p = subprocess.Popen([sys.executable, __file__, "--worker", kind, "--ballast-gib", str(args.ballast_gib)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert p.stdout is not None
        missing[kind] = json.loads(p.stdout.readline())["missing"]
        procs[kind] = p

    big = f"{args.ballast_gib:g} GiB"
    rows = [(label.format(big=big), kind, name) for label, kind, name in ROWS if kind in procs]
    live = [r for r in rows if r[2] not in missing[r[1]]]
    elapsed = {r: 0.0 for r in live}
    cpu = {r: 0.0 for r in live}
    done = {r: 0 for r in live}
    rounds = -(-args.runs // args.batch)
    for i in range(rounds):
        order = live[i % len(live):] + live[:i % len(live)]
        for r in order:
            n = min(args.batch, args.runs - done[r])
            p = procs[r[1]]
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write(f"{r[2]} {n}\n")
            p.stdin.flush()
            ans = json.loads(p.stdout.readline())
            elapsed[r] += ans["elapsed"]
            cpu[r] += ans["cpu"]
            done[r] += n
    for p in procs.values():
        assert p.stdin is not None
        p.stdin.close()
        p.wait()

    base_row = rows[0]
    base = elapsed[base_row] / done[base_row] if base_row in elapsed else 1.0
    print(f"/bin/true x {args.runs} per contender, batches of {args.batch} interleaved, {os.cpu_count()} cpus, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'contender':<46} {'ms/run':>8} {'x bare':>8} {'cpu ms':>8}")
    for r in rows:
        label = r[0]
        if r not in elapsed:
            print(f"{label:<46} {'-':>8} {'-':>8} {'-':>8}  {missing[r[1]][r[2]]}")
            continue
        per = elapsed[r] / done[r]
        print(f"{label:<46} {per * 1000:8.2f} {per / base:8.2f} {cpu[r] / done[r] * 1000:8.2f}")
    per_run = {r[2] + ":" + r[1]: elapsed[r] / done[r] for r in elapsed}
    c = per_run.get("c:small")
    if c:
        print(f"goal: C sandbox <= 3x bare: {c / base:.2f}x", end="")
        if "bwrap:small" in per_run:
            print(f"; bubblewrap / C sandbox >= 2.5: {per_run['bwrap:small'] / c:.2f}x", end="")
        if "c:base" in per_run:
            print(f"; this build / baseline: {c / per_run['c:base']:.2f}x", end="")
        print()


if __name__ == "__main__":
    main()
