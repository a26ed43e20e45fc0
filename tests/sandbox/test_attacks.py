"""Adversarial programs, in C and in Python: each ends with the right status, nothing left running."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from conveyor_sandbox.contract import Limits, RunResult, Status, safe_read
from conveyor_sandbox.native import CSandbox

from .conftest import PROGRAMS, PYTHON

LIMITS = Limits(cpu_ms=500, wall_ms=1000, memory_kib=64 * 1024, output_bytes=64 * 1024)
# programs that must end on cpu time get wall room to use it on a loaded host
CPU_BOUND = {"busy", "catch_sigxcpu", "fork_bomb"}


def limits_for(name: str) -> Limits:
    """The run's limits: LIMITS, with 10 s of wall time for the cpu-bound attacks."""
    return replace(LIMITS, wall_ms=10_000) if name in CPU_BOUND else LIMITS
HUNDRED_MIB = 100 * 1024 * 1024

TLE = {Status.TIME_LIMIT}
ANY_TIME = {Status.TIME_LIMIT, Status.WALL_TIME_LIMIT}

# name, args, expected statuses, expected stdout prefix (None: not checked)
CASES: list[tuple[str, list[str], set[Status], bytes | None]] = [
    ("busy", [], TLE, None),
    ("sleep_forever", [], {Status.WALL_TIME_LIMIT}, None),
    ("sigstop", [], {Status.WALL_TIME_LIMIT}, None),
    ("catch_sigxcpu", [], TLE, None),
    ("memory_touch", ["1024"], {Status.MEMORY_LIMIT}, None),
    ("big_reservation", [], {Status.OK}, b"reserved"),
    ("fork_bomb", [], ANY_TIME | {Status.MEMORY_LIMIT}, None),  # 64 processes may also exhaust 64 MiB
    ("daemon", [], {Status.OK}, b"parent leaving"),
    ("flood", ["1"], {Status.OUTPUT_LIMIT}, b"xxxx"),
    ("flood", ["2"], {Status.OUTPUT_LIMIT}, b""),
    ("sparse_file", [], {Status.OUTPUT_LIMIT}, b""),
    ("connect", [], {Status.SYSCALL_DENIED}, b""),
    ("read_shadow", [], {Status.OK}, b"BLOCKED"),
    ("write_outside", [], {Status.OK}, b"BLOCKED"),
    ("exec_written", [], {Status.OK}, b"BLOCKED"),
    ("symlink", [], {Status.OK}, b"planted"),
    ("ptrace", [], {Status.SYSCALL_DENIED}, b""),
    ("kill_parent", [], {Status.OK}, b"BLOCKED"),
    ("clone3", [], {Status.OK}, b"BLOCKED: ENOSYS"),
    ("io_uring", [], {Status.SYSCALL_DENIED}, b""),
    ("keyctl", [], {Status.SYSCALL_DENIED}, b""),
    ("int80", [], {Status.SYSCALL_DENIED}, b""),
    ("segfault", [], {Status.SIGNALLED}, None),
    ("abort", [], {Status.SIGNALLED}, None),
    ("exit3", [], {Status.RUNTIME_ERROR}, None),
    ("threads", [], {Status.OK}, b"sum 4000000\n"),
]

PY_CASES: list[tuple[str, list[str], set[Status], bytes | None]] = [
    ("busy", [], TLE, None),
    ("sleep_forever", [], {Status.WALL_TIME_LIMIT}, None),
    ("sigstop", [], {Status.WALL_TIME_LIMIT}, None),
    ("catch_sigxcpu", [], TLE, None),
    ("memory_touch", [], {Status.MEMORY_LIMIT}, None),
    ("fork_bomb", [], ANY_TIME | {Status.MEMORY_LIMIT}, None),
    ("daemon", [], {Status.OK}, b"parent leaving"),
    ("flood", ["1"], {Status.OUTPUT_LIMIT}, b"xxxx"),
    ("flood", ["2"], {Status.OUTPUT_LIMIT}, b""),
    # CPython ignores SIGXFSZ, so the write fails with EFBIG instead of killing it: the file left at the
    # size limit still says output_limit
    ("sparse_file", [], {Status.OUTPUT_LIMIT, Status.RUNTIME_ERROR}, b""),
    ("connect", [], {Status.SYSCALL_DENIED}, b""),
    ("read_shadow", [], {Status.OK}, b"BLOCKED"),
    ("write_outside", [], {Status.OK}, b"BLOCKED"),
    ("exec_written", [], {Status.OK}, b"BLOCKED"),
    ("symlink", [], {Status.OK}, b"planted"),
    ("kill_parent", [], {Status.OK}, b"BLOCKED"),
    ("segfault", [], {Status.SIGNALLED}, None),
    ("abort", [], {Status.SIGNALLED}, None),
    ("exit3", [], {Status.RUNTIME_ERROR}, None),
    ("threads", [], {Status.OK}, b"sum 8\n"),
]

SIGNALS = {"segfault": 11, "abort": 6, "sparse_file": 25, "connect": 31, "ptrace": 31, "io_uring": 31,
           "keyctl": 31, "int80": 31}


def check(name: str, args: list[str], r: RunResult, expected: set[Status], out: bytes | None, workdir: Path) -> None:
    assert r.status in expected, f"{name}: {r}"
    assert b"ESCAPED" not in r.stdout, r.stdout
    if out is not None:
        assert r.stdout.startswith(out), r.stdout[:200]
    if name in SIGNALS and r.status is not Status.RUNTIME_ERROR:
        assert r.signal == SIGNALS[name], r
    if name == "exit3":
        assert r.exit_code == 3 and r.signal is None
    if name == "memory_touch":
        assert r.oom_killed
    if name == "flood":
        stream = "stdout" if args == ["1"] else "stderr"
        # killed at the cap: far less than the 100 MiB it would write
        assert LIMITS.output_bytes < getattr(r, f"{stream}_len") < HUNDRED_MIB
        assert getattr(r, f"{stream}_truncated")
        assert len(getattr(r, stream)) == LIMITS.output_bytes
    if name == "sparse_file":
        assert not (workdir / "sparse.bin").exists() or (workdir / "sparse.bin").stat().st_size <= 64 << 20
    if name == "write_outside":
        for p in ("/etc/conveyor-escape", "/var/tmp/conveyor-escape", "/root/conveyor-escape", "/conveyor-escape"):
            assert not os.path.exists(p)
    if name == "exec_written":
        assert (workdir / "mytrue").exists()
    if name == "symlink":
        assert (workdir / "result.txt").is_symlink()
        with pytest.raises(PermissionError):
            safe_read(workdir, "result.txt")
        with pytest.raises(OSError):
            safe_read(workdir, "outdir/passwd")
    if name in ("busy", "catch_sigxcpu"):
        assert LIMITS.cpu_ms is not None and r.cpu_ms >= LIMITS.cpu_ms
    if name in ("sleep_forever", "sigstop"):
        assert r.wall_ms >= 900


@pytest.mark.parametrize("name,args,expected,out", CASES, ids=[f"{c[0]}{''.join(c[1])}" for c in CASES])
def test_c_program(c_sandbox: CSandbox, bindir: Path, workdir: Path, name: str, args: list[str],
                   expected: set[Status], out: bytes | None) -> None:
    r = c_sandbox.run([str(bindir / name), *args], limits=limits_for(name), workdir=workdir,
                      readonly_paths=[bindir])
    check(name, args, r, expected, out, workdir)


@pytest.mark.parametrize("name,args,expected,out", PY_CASES, ids=[f"{c[0]}{''.join(c[1])}" for c in PY_CASES])
def test_python_program(c_sandbox: CSandbox, workdir: Path, name: str, args: list[str],
                        expected: set[Status], out: bytes | None) -> None:
    prog = PROGRAMS / "py" / f"{name}.py"
    # the program's folder is mounted in: a checkout under /tmp is hidden by the box's private /tmp
    r = c_sandbox.run([PYTHON, "-I", str(prog), *args], limits=limits_for(name), workdir=workdir,
                      readonly_paths=[prog.parent])
    check(name, args, r, expected, out, workdir)


def test_private_tmp_and_no_network(c_sandbox: CSandbox, workdir: Path) -> None:
    r = c_sandbox.run(["/bin/sh", "-c", "echo secret > /tmp/box-file; ls /tmp; cat /proc/net/dev | wc -l; hostname"],
                      limits=LIMITS, workdir=workdir)
    assert r.status is Status.OK, r
    lines = r.stdout.decode().split()
    assert "box-file" in lines and lines[-1] == "sandbox"
    assert int(lines[-2]) == 3  # two header lines and lo only
    assert not os.path.exists("/tmp/box-file")


def test_each_run_is_counted_by_backend_and_status(c_sandbox: CSandbox, workdir: Path) -> None:
    from conveyor.metrics import enable
    registry = enable().registry

    def runs(status: str) -> float:
        return registry.get_sample_value("conveyor_sandbox_runs_total",
                                         {"sandbox": c_sandbox.id, "status": status}) or 0.0

    ok, failed = runs("ok"), runs("runtime_error")
    assert c_sandbox.run(["/bin/true"], limits=LIMITS, workdir=workdir).status is Status.OK
    assert c_sandbox.run(["/bin/false"], limits=LIMITS, workdir=workdir).status.value == "runtime_error"
    assert (runs("ok") - ok, runs("runtime_error") - failed) == (1.0, 1.0)
    assert (registry.get_sample_value("conveyor_sandbox_overhead_seconds_count", {"sandbox": c_sandbox.id}) or 0) >= 2


def test_readonly_paths_are_readonly_and_executable(c_sandbox: CSandbox, bindir: Path, workdir: Path) -> None:
    r = c_sandbox.run(["/bin/sh", "-c", f"{bindir}/exit3; echo $?; touch {bindir}/x || echo ro"],
                      limits=LIMITS, workdir=workdir, readonly_paths=[bindir])
    assert r.stdout == b"3\nro\n", r


def test_allow_exec(c_sandbox: CSandbox, workdir: Path) -> None:
    lim = Limits(cpu_ms=500, wall_ms=1000, allow_exec=True)
    r = c_sandbox.run(["/bin/sh", "-c", "cp /bin/true ./t && ./t && echo ran"], limits=lim, workdir=workdir)
    assert r.stdout == b"ran\n" and "workdir_noexec" not in r.enforced


def test_box_runs_as_unprivileged_uid_in_pid_namespace(c_sandbox: CSandbox, workdir: Path) -> None:
    r = c_sandbox.run(["/bin/sh", "-c", "id -u; echo $$; ls /proc | grep -c '^[0-9]'"], limits=LIMITS, workdir=workdir)
    uid, pid, nproc = r.stdout.split()
    assert 60000 <= int(uid) < 61000
    assert int(pid) == 2 and int(nproc) <= 4
    assert os.stat(workdir).st_uid == 0  # ownership handed back


def test_degraded_without_cgroups_is_still_safe(bindir: Path, workdir: Path) -> None:
    sb = CSandbox(use_cgroups=False)
    r = sb.run([str(bindir / "memory_touch"), "1024"], limits=LIMITS, workdir=workdir, readonly_paths=[bindir])
    assert r.status is not Status.OK and r.status is not Status.SANDBOX_ERROR, r
    assert "rlimit_as" in r.enforced and not any(e.startswith("cgroup") for e in r.enforced)
    assert r.memory_source == "ru_maxrss" and r.time_source == "rusage"
    r = sb.run([str(bindir / "fork_bomb")], limits=limits_for("fork_bomb"), workdir=workdir, readonly_paths=[bindir])
    assert r.status in ANY_TIME, r
    # without cgroup cpu.stat the cpu limit is RLIMIT_CPU's: whole seconds, SIGKILL at the hard limit
    lim = Limits(cpu_ms=500, wall_ms=20_000, memory_kib=64 * 1024)
    r = sb.run([str(bindir / "catch_sigxcpu")], limits=lim, workdir=workdir, readonly_paths=[bindir])
    assert r.status is Status.TIME_LIMIT and r.signal == 9, r


def test_prepared_boxes_see_mounts_made_after_them(c_sandbox: CSandbox, workdir: Path, tmp_path: Path) -> None:
    """Boxes are prepared ahead with a copy of the mount table; a later mount must still show."""
    import subprocess

    from conveyor_sandbox.native import flush

    target = tmp_path / "mnt"
    target.mkdir()
    (target / "under").write_text("x")
    c_sandbox.run(["/bin/true"], limits=LIMITS, workdir=workdir)
    flush(drop_spares=False)  # prepared boxes are ready now, with the old mount table
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", str(target)], check=True)
    try:
        (target / "over").write_text("y")
        r = c_sandbox.run(["/bin/ls", str(target)], limits=LIMITS, workdir=workdir, readonly_paths=[target])
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert r.status is Status.OK, r
    assert r.stdout.split() == [b"over"], r.stdout


def test_prepared_boxes_take_each_runs_memory_limit(c_sandbox: CSandbox, bindir: Path, workdir: Path) -> None:
    """Prepared boxes get the last run's limits ahead; a run with other limits must get its own."""
    from conveyor_sandbox.native import flush

    small = Limits(cpu_ms=2000, wall_ms=4000, memory_kib=64 * 1024)
    large = Limits(cpu_ms=2000, wall_ms=4000, memory_kib=512 * 1024)
    for before, lim, expected in ((small, large, Status.OK), (large, small, Status.MEMORY_LIMIT)):
        c_sandbox.run(["/bin/true"], limits=before, workdir=workdir)
        flush(drop_spares=False)  # prepared boxes now carry the limits of `before`
        r = c_sandbox.run([str(bindir / "memory_touch"), "100"], limits=lim, workdir=workdir, readonly_paths=[bindir])
        assert r.status is expected, r
