"""Figures the sandbox reports are right, independent of the caller, and runs leak nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conveyor.plugins import load_plugins
from conveyor_sandbox.contract import Limits, SandboxUnavailable, Status, choose_sandbox
from conveyor_sandbox.native import CSandbox, flush

LIM = Limits(cpu_ms=3000, wall_ms=6000, memory_kib=512 * 1024)


def near(value: float, target: float, tol: float = 0.10) -> bool:
    return abs(value - target) <= tol * target


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup", "rusage"])
def test_cpu_time_within_10_percent(bindir: Path, workdir: Path, cgroups: bool) -> None:
    sb = CSandbox(use_cgroups=cgroups)
    r = sb.run([str(bindir / "cpu_known"), "500"], limits=LIM, workdir=workdir, readonly_paths=[bindir])
    assert r.status is Status.OK, r
    assert r.time_source == ("cgroup_cpu_stat" if cgroups else "rusage")
    assert near(r.cpu_ms, 500), r.cpu_ms


def _peak(sb: CSandbox, bindir: Path, workdir: Path) -> tuple[int, str]:
    r = sb.run([str(bindir / "memory_touch"), "100"], limits=LIM, workdir=workdir, readonly_paths=[bindir])
    assert r.status is Status.OK, r
    assert r.memory_kib is not None
    return r.memory_kib, r.memory_source


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup", "ru_maxrss"])
def test_peak_memory_within_10_percent_and_unchanged_by_a_big_caller(bindir: Path, workdir: Path,
                                                                     cgroups: bool) -> None:
    sb = CSandbox(use_cgroups=cgroups)
    small, source = _peak(sb, bindir, workdir)
    assert source == ("cgroup_v1_max_usage" if cgroups else "ru_maxrss") or source == "cgroup_peak"
    assert near(small, 100 * 1024), small
    ballast = b"\x01" * (1 << 30)  # the caller now holds 1 GiB, touched
    try:
        big, _ = _peak(sb, bindir, workdir)
    finally:
        del ballast
    assert near(big, small, 0.10), (small, big)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _children() -> list[str]:
    out = []
    for t in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{t}/children") as f:
            out += f.read().split()
    return out


def test_500_runs_leak_nothing(c_sandbox: CSandbox, workdir: Path) -> None:
    c_sandbox.run(["/bin/true"], workdir=workdir)  # warm up lazy imports and the uid pool
    flush()  # spares and spent boxes hold descriptors until the background thread is done
    fds = _fds()
    before = set(_children())  # other tests of the session may own servers (moto, redis) we must not count
    for _ in range(500):
        r = c_sandbox.run(["/bin/true"], workdir=workdir, limits=Limits(cpu_ms=1000))
        assert r.status is Status.OK, r
    flush()
    assert _fds() == fds
    assert set(_children()) - before == set()


def test_plugin_registers_both_backends_and_prefers_c() -> None:
    host = load_plugins()
    reg = host.registry("sandboxes")
    assert {"c-sandbox", "python-fallback"} <= set(reg.keys())
    assert choose_sandbox(reg).id == "c-sandbox"
    assert choose_sandbox(reg, prefer="python-fallback").id == "python-fallback"
    with pytest.raises(SandboxUnavailable):
        choose_sandbox(reg, prefer="nope")


def test_fallback_is_chosen_when_c_cannot_load(tmp_path: Path) -> None:
    from conveyor_sandbox.fallback import PythonSandbox

    broken = CSandbox(helper=tmp_path / "missing-helper")
    ok, why = broken.available()
    assert not ok and "helper" in why
    chosen = choose_sandbox([broken, PythonSandbox()])
    assert chosen.id == "python-fallback"
    r = chosen.run(["/bin/echo", "x"], workdir=tmp_path, limits=Limits(cpu_ms=1000))
    assert r.backend == "python-fallback" and r.ok


def test_concurrent_runs_each_get_their_own_box(c_sandbox: CSandbox, tmp_path: Path) -> None:
    """Threads share the prepared boxes: every run gets its own stdin, work directory and uid."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> tuple[int, bytes, bytes]:
        wd = tmp_path / f"w{i}"
        wd.mkdir()
        r = c_sandbox.run(["/bin/sh", "-c", "cat; echo; id -u; echo x > f; ls"], stdin=f"in{i}".encode(),
                          workdir=wd, limits=Limits(cpu_ms=2000, wall_ms=10000))
        assert r.status is Status.OK, r
        return i, r.stdout, (wd / "f").read_bytes()

    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(one, range(24)))
    for i, out, f in results:
        lines = out.split()
        assert lines[0] == f"in{i}".encode() and lines[2:] == [b"f"], out
        assert 60000 <= int(lines[1]) < 61000 and f == b"x\n"
