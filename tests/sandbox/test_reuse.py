"""What boxes prepared ahead or reusing a namespace share: nothing a box leaves may reach the next ones."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from conveyor_sandbox.contract import Limits, Status
from conveyor_sandbox.native import CSandbox, cgroup_layout, flush

from .conftest import PYTHON

LIM = Limits(cpu_ms=2000, wall_ms=5000)
NAME = "\\0conveyor-left-behind"

# Binds an abstract listener, hands it to the caller through the socket at argv[1] and
# leaves a second one only reachable from a cycle of in-flight descriptors (garbage the
# kernel collects some time after the box is gone).
LEAVE = f"""
import os, socket, sys
keep = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
keep.bind("{NAME}")
keep.listen(8)
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect(sys.argv[1])
socket.send_fds(c, [b"x"], [keep.fileno()])
c.recv(1)
orphan = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
orphan.bind("{NAME}-orphan")
orphan.listen(8)
a, b = socket.socketpair()
socket.send_fds(a, [b"x"], [b.fileno(), orphan.fileno()])
print(os.readlink("/proc/self/ns/net"))
"""

PROBE = f"""
import os, socket
for name in ("{NAME}", "{NAME}-orphan"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(name)
        print("CONNECTED")
    except OSError:
        print("refused")
    s.close()
print(os.readlink("/proc/self/ns/net"))
print(sum(1 for _ in open("/proc/net/unix")))
"""


def _receive_one(server: socket.socket, out: list[int]) -> None:
    conn, _ = server.accept()
    with conn:
        _, fds, _, _ = socket.recv_fds(conn, 1, 4)
        out.extend(fds)
        conn.sendall(b"k")


def test_a_later_box_cannot_reach_sockets_a_box_left(c_sandbox: CSandbox, workdir: Path) -> None:
    path = str(workdir / "handoff.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen(1)
    held: list[int] = []
    t = threading.Thread(target=_receive_one, args=(server, held))
    t.start()
    try:
        r = c_sandbox.run([PYTHON, "-I", "-c", LEAVE, path], limits=LIM, workdir=workdir)
        t.join(5)
        assert r.status is Status.OK, r
        assert len(held) == 1  # the listener outlives its box, in this process
        left_ns = r.stdout.split()[0]
        seen = []
        other_kind = CSandbox(use_cgroups=False)  # its boxes are made on the spot, also in kept namespaces
        for i in range(12):
            flush(drop_spares=False)  # spent boxes released, their namespaces kept for reuse
            sb = other_kind if i % 3 == 2 else c_sandbox
            p = sb.run([PYTHON, "-I", "-c", PROBE], limits=LIM, workdir=workdir)
            assert p.status is Status.OK, p
            a, b, ns, nsock = p.stdout.split()
            assert (a, b) == (b"refused", b"refused"), p.stdout
            assert nsock == b"1", p.stdout  # /proc/net/unix: the header alone
            assert ns != left_ns, "a namespace with a socket still in it was reused"
            seen.append(ns)
        assert len(set(seen)) < len(seen), f"namespaces are not reused: {seen}"
    finally:
        for fd in held:
            os.close(fd)
        server.close()


def test_namespaces_are_not_reused_across_a_flush(c_sandbox: CSandbox, workdir: Path) -> None:
    """flush() removes everything kept for later boxes, reused namespaces included."""
    c_sandbox.run(["/bin/true"], limits=LIM, workdir=workdir)
    flush()
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(3):
        c_sandbox.run(["/bin/true"], limits=LIM, workdir=workdir)
    flush()
    assert set(os.listdir("/proc/self/fd")) == before


def test_socketpair_of_another_family_is_denied_like_socket(c_sandbox: CSandbox, workdir: Path) -> None:
    """Only unix sockets exist in a box, whichever call makes them."""
    prog = "import socket; socket.socketpair(socket.AF_UNIX); print('unix ok', flush=True); " \
           "socket.socketpair(socket.AF_INET)"
    r = c_sandbox.run([PYTHON, "-I", "-c", prog], limits=LIM, workdir=workdir)
    assert r.status is Status.SYSCALL_DENIED and r.stdout == b"unix ok\n", r


TMP_PROBE = """
for d in /tmp /dev/shm; do test -e $d/left && echo "found $d/left"; done
echo left > /tmp/left; echo left > /dev/shm/left
stat -f -c '%b %S' /tmp /dev/shm
awk '$5 == "/tmp" || $5 == "/dev/shm" {print $5, $6}' /proc/self/mountinfo
"""


def _tmp_view(c_sandbox: CSandbox, workdir: Path, lim: Limits) -> list[str]:
    r = c_sandbox.run(["/bin/sh", "-c", TMP_PROBE], limits=lim, workdir=workdir)
    assert r.status is Status.OK, r
    return r.stdout.decode().splitlines()


def test_tmp_made_ahead_is_fresh_per_box_and_of_the_runs_size(c_sandbox: CSandbox, workdir: Path) -> None:
    small = Limits(cpu_ms=2000, wall_ms=5000, tmp_kib=1024)
    for lim, kib in ((LIM, LIM.tmp_kib), (LIM, LIM.tmp_kib), (small, 1024), (LIM, LIM.tmp_kib), (small, 1024)):
        flush(drop_spares=False)  # the next box is a prepared one
        lines = _tmp_view(c_sandbox, workdir, lim)
        assert not [line for line in lines if line.startswith("found")], lines
        sizes = [int(b) * int(s) // 1024 for b, s in (line.split() for line in lines if line[0].isdigit())]
        assert sizes == [kib, kib], lines
        opts = dict(line.split(" ", 1) for line in lines if line.startswith("/") and not line.endswith(":"))
        assert {"nosuid", "nodev"} <= set(opts["/tmp"].split(",")), opts
        assert {"nosuid", "nodev", "noexec"} <= set(opts["/dev/shm"].split(",")), opts


def _cgroups(text: str) -> dict[str, str]:
    """The box's cgroups from its /proc/self/cgroup: 'v2', 'memory', 'pids' → path."""
    out = {}
    for line in text.splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(",") if ctrls else ["v2"]:
            out[c] = path
    return {k: v for k, v in out.items() if k in ("v2", "memory", "pids")}


def test_reused_cgroups_give_each_run_its_own_figures(c_sandbox: CSandbox, bindir: Path, workdir: Path) -> None:
    """cpu time and peak memory are the run's own even in a cgroup an earlier box used."""
    lim = Limits(cpu_ms=3000, wall_ms=6000, memory_kib=256 * 1024)
    busy = f"cat /proc/self/cgroup; {bindir}/cpu_known 300; {bindir}/memory_touch 100"
    first = c_sandbox.run(["/bin/sh", "-c", busy], limits=lim, workdir=workdir, readonly_paths=[bindir])
    assert first.status is Status.OK and first.cpu_ms >= 300, first
    assert first.memory_kib is not None and first.memory_kib >= 100 * 1024, first
    seen = [_cgroups(first.stdout.decode())]
    for _ in range(6):
        flush(drop_spares=False)  # the spent box is released, its cgroups kept for reuse
        r = c_sandbox.run(["/bin/sh", "-c", f"cat /proc/self/cgroup; exec {bindir}/memory_touch 20"],
                          limits=lim, workdir=workdir, readonly_paths=[bindir])
        assert r.status is Status.OK, r
        assert r.cpu_ms < 100, r
        assert r.memory_kib is not None and abs(r.memory_kib - 20 * 1024) <= 2 * 1024, r
        seen.append(_cgroups(r.stdout.decode()))
    layout = cgroup_layout()
    reused = {"v2": bool(layout.v2_dir) and not layout.v2_memory, "pids": bool(layout.v1_pids_dir)}
    for kind, expected in reused.items():
        paths = [s[kind] for s in seen if kind in s]
        if expected:
            assert paths.count(paths[0]) > 1, f"the first box's {kind} cgroup was not reused: {paths}"
    if layout.v1_memory_dir:
        memory = [s["memory"] for s in seen]
        assert len(set(memory)) == len(memory), f"a memory cgroup was reused: {memory}"


FORK_12 = """
import os, time
pids = []
for _ in range(12):
    try:
        p = os.fork()
    except OSError:
        break
    if p == 0:
        time.sleep(5)
        os._exit(0)
    pids.append(p)
print(len(pids))
"""


def test_reused_pids_cgroup_takes_each_runs_limit(c_sandbox: CSandbox, workdir: Path) -> None:
    for pids, ok in ((4, False), (64, True), (4, False), (64, True)):
        flush(drop_spares=False)  # the next box reuses the last one's pids cgroup
        lim = Limits(cpu_ms=2000, wall_ms=5000, pids=pids)
        r = c_sandbox.run([PYTHON, "-I", "-c", FORK_12], limits=lim, workdir=workdir)
        assert r.status is Status.OK, r
        assert (int(r.stdout) == 12) is ok, (pids, r.stdout)


COUNTERS = """
import sys
own = {}
for line in open("/proc/self/cgroup"):
    _, ctrls, path = line.rstrip("\\n").split(":", 2)
    own[ctrls or "v2"] = path
for kind, mount, name in (a.split(",") for a in sys.argv[1:]):
    try:
        print(kind, open(mount + own[kind] + "/" + name).read().split()[:2])
    except OSError as e:
        print(kind, "denied", e.errno)
"""


def test_a_box_cannot_read_the_counters_of_a_cgroup_it_may_share(c_sandbox: CSandbox, workdir: Path) -> None:
    """A reused cgroup's cumulative counters hold earlier boxes' figures: the box may not read them."""
    layout = cgroup_layout()
    own = _cgroups(Path("/proc/self/cgroup").read_text())
    probes = []
    if layout.v2_dir and not layout.v2_memory:  # with the memory controller it is never reused
        probes.append(f"v2,{layout.v2_dir.removesuffix(own['v2'].rstrip('/'))},cpu.stat")
    if layout.v1_pids_dir:
        probes.append(f"pids,{layout.v1_pids_dir.removesuffix(own['pids'].rstrip('/'))},pids.max")
    assert probes, "no reusable cgroup on this host"
    c_sandbox.run(["/bin/true"], limits=LIM, workdir=workdir)
    flush(drop_spares=False)
    r = c_sandbox.run([PYTHON, "-I", "-c", COUNTERS, *probes], limits=LIM, workdir=workdir)
    assert r.status is Status.OK, r
    lines = r.stdout.decode().splitlines()
    # 2: the box has no /sys at all (allow-list root); 13: the files are root-only
    assert len(lines) == len(probes) and all(line.split()[1:] in (["denied", "2"], ["denied", "13"])
                                             for line in lines), lines


def test_rlimits_set_ahead_reach_the_program(c_sandbox: CSandbox, workdir: Path) -> None:
    """Core dumps, locked memory and POSIX message queues are off in every box, prepared or not."""
    prog = "import resource as r; print(*[r.getrlimit(x) for x in (r.RLIMIT_CORE, r.RLIMIT_MEMLOCK, " \
           "r.RLIMIT_MSGQUEUE)])"
    for sb in (c_sandbox, CSandbox(use_cgroups=False)):
        flush(drop_spares=False)
        r = sb.run([PYTHON, "-I", "-c", prog], limits=LIM, workdir=workdir)
        assert r.status is Status.OK and r.stdout == b"(0, 0) (0, 0) (0, 0)\n", r


def test_the_program_runs_at_the_callers_priority(c_sandbox: CSandbox, workdir: Path) -> None:
    """Boxes are prepared by an idle-priority thread; the program still gets the caller's scheduling."""
    prog = "import os; print(os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))"
    mine = f"{os.sched_getscheduler(0)} {os.getpriority(os.PRIO_PROCESS, 0)}\n".encode()
    c_sandbox.run(["/bin/true"], limits=LIM, workdir=workdir)
    for sb in (c_sandbox, CSandbox(use_cgroups=False)):
        flush(drop_spares=False)  # the next box is a prepared one
        r = sb.run([PYTHON, "-I", "-c", prog], limits=LIM, workdir=workdir)
        assert r.status is Status.OK and r.stdout == mine, r
    os.setpriority(os.PRIO_PROCESS, 0, 5)  # a caller that is itself niced passes it on
    try:
        c_sandbox.run(["/bin/true"], limits=LIM, workdir=workdir)
        flush(drop_spares=False)
        r = c_sandbox.run([PYTHON, "-I", "-c", prog], limits=LIM, workdir=workdir)
        assert r.status is Status.OK and r.stdout == f"{os.SCHED_OTHER} 5\n".encode(), r
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
