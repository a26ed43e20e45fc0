"""What a box sees and can exhaust: the allow-list root, a minimal /dev, bounded disk, fail-closed seccomp.

Each test is an attack a submission made against a box that saw the whole host tree read-only.
Host secrets are planted outside /tmp (under /var/tmp), where a deployment keeps its storage.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor_sandbox.contract import Limits, Status
from conveyor_sandbox.native import CSandbox
from conveyor_sandbox.workspace import open_workspace, sweep

from .conftest import PYTHON

LIM = Limits(cpu_ms=5000, wall_ms=20000, memory_kib=512 * 1024)
#: the search lstat()s every file the box sees (/usr and the interpreter's environment: a few hundred thousand);
#: on a host whose inode cache was reclaimed that walk waits on the disk, so it gets room a real program would not
SEARCH_LIM = Limits(cpu_ms=60_000, wall_ms=180_000, memory_kib=512 * 1024)

SEARCH = r"""
import os, socket, stat, sys
found, sockets, reached = [], [], []
for top, dirs, files in os.walk("/", onerror=lambda e: None):
    if top in ("/proc", "/sys"):
        dirs[:] = []
        continue
    for name in files:
        path = os.path.join(top, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISSOCK(st.st_mode):
            sockets.append(path)
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                reached.append(path)
            except OSError:
                pass
        elif name.endswith((".zip", ".out", ".db", ".toml", ".env", ".sqlite")) or "SECRET" in name:
            found.append(path)
print("TOP", " ".join(sorted(os.listdir("/"))))
print("ETC", " ".join(sorted(os.listdir("/etc"))))
print("DEV", " ".join(sorted(os.listdir("/dev"))))
for p in found: print("FOUND", p)
for p in sockets: print("SOCKET", p)
for p in reached: print("REACHED", p)
"""


@pytest.fixture
def host_secrets() -> Iterator[Path]:
    """A deployment's storage, database, configuration and a listening service socket, outside /tmp."""
    base = Path(tempfile.mkdtemp(prefix="conveyor-host-", dir="/var/tmp"))
    base.chmod(0o755)
    (base / "storage" / "problems").mkdir(parents=True)
    (base / "storage" / "problems" / ("ab" * 32 + ".zip")).write_bytes(b"PK\x05\x06" + b"\0" * 18)
    (base / "storage" / "answer-SECRET.out").write_text("42\n")
    (base / "conveyor.db").write_bytes(b"SQLite format 3\0")
    (base / "conveyor.toml").write_text('db_url = "postgresql://app:hunter2@db/prod"\n')
    (base / ".env").write_text("PASSWORD=hunter2\n")
    for p in base.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)  # readable by anyone: only the box's view protects them
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(base / "service.sock"))
    os.chmod(base / "service.sock", 0o777)
    srv.listen(8)
    try:
        yield base
    finally:
        srv.close()
        shutil.rmtree(base)


def test_a_search_of_the_box_finds_nothing_of_the_hosts(c_sandbox: CSandbox, workdir: Path,
                                                        host_secrets: Path) -> None:
    """No stored package, answer, database, configuration or Unix socket of the host is in the box."""
    r = c_sandbox.run([PYTHON, "-I", "-c", SEARCH], limits=SEARCH_LIM, workdir=workdir)
    assert r.status is Status.OK, r
    out = r.stdout.decode()
    lines = out.splitlines()
    top = next(line for line in lines if line.startswith("TOP ")).split()[1:]
    assert set(top) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr"}, top
    for gone in ("var", "srv", "home", "root", "run", "opt", "mnt", "media", "boot", "sys"):
        assert gone not in top
    etc = set(next(line for line in lines if line.startswith("ETC ")).split()[1:])
    assert etc <= {"alternatives", "group", "hosts", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime",
                   "nsswitch.conf", "passwd"}, etc
    dev = set(next(line for line in lines if line.startswith("DEV ")).split()[1:])
    assert dev == {"fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout", "urandom", "zero"}, dev
    assert str(host_secrets) not in out
    assert "SOCKET" not in out and "REACHED" not in out, out
    assert "hunter2" not in out and "SECRET" not in out
    found = [line.split(" ", 1)[1] for line in lines if line.startswith("FOUND ")]
    assert all(p.startswith("/usr/") for p in found), found  # e.g. a zip of the system's own Python


def test_kernels_without_detached_copies_build_the_same_view(tmp_path: Path, workdir: Path,
                                                            host_secrets: Path) -> None:
    """Before Linux 6.15 the helper keeps the caller's tree at /.old until the run is set up."""
    helper = tmp_path / "helper-attached-old"
    src = Path(__file__).resolve().parents[2] / "plugins" / "conveyor-sandbox" / "csrc"
    subprocess.run(["cc", "-O2", "-DSBX_ATTACHED_OLD", "-static", "-nostdlib", "-ffreestanding",
                    "-fno-stack-protector", "-fno-pie", "-no-pie", "-I", str(src), "-o", str(helper),
                    str(src / "helper.c")], check=True)
    tmp_path.chmod(0o755)
    sb = CSandbox(helper=helper)
    r = sb.run([PYTHON, "-I", "-c", SEARCH], limits=SEARCH_LIM, workdir=workdir)
    assert r.status is Status.OK, r
    out = r.stdout.decode()
    top = next(line for line in out.splitlines() if line.startswith("TOP ")).split()[1:]
    assert ".old" not in top and "var" not in top and "root" not in top, top
    assert "SOCKET" not in out and "hunter2" not in out and str(host_secrets) not in out


def test_a_readonly_path_the_caller_names_is_all_the_box_gets_of_the_host(c_sandbox: CSandbox, workdir: Path,
                                                                          host_secrets: Path) -> None:
    """Naming one folder binds that folder, not its parent's other files."""
    shown = host_secrets / "storage" / "problems"
    r = c_sandbox.run([PYTHON, "-I", "-c", "import os, sys; print(sorted(os.listdir(sys.argv[1])));"
                       "print(os.path.exists(sys.argv[2]))", str(shown), str(host_secrets / "conveyor.toml")],
                      limits=LIM, workdir=workdir, readonly_paths=[shown])
    assert r.status is Status.OK, r
    assert r.stdout.decode().splitlines() == [str(["ab" * 32 + ".zip"]), "False"]


def test_no_host_pty_and_no_device_but_the_harmless_ones(c_sandbox: CSandbox, workdir: Path) -> None:
    prog = ("import os\n"
            "for p in ('/dev/ptmx', '/dev/pts/ptmx', '/dev/tty', '/dev/vda', '/dev/mem', '/dev/kmsg'):\n"
            "    try: os.open(p, os.O_RDWR); print('OPENED', p)\n"
            "    except OSError as e: print(p, e.errno)\n"
            "print(len(open('/dev/urandom','rb').read(16)), open('/dev/zero','rb').read(2))\n"
            "open('/dev/null','w').write('x')\n")
    r = c_sandbox.run([PYTHON, "-I", "-c", prog], limits=LIM, workdir=workdir)
    assert r.status is Status.OK, r
    assert b"OPENED" not in r.stdout, r.stdout
    assert r.stdout.decode().splitlines()[-1] == "16 b'\\x00\\x00'"


def test_the_box_root_etc_and_dev_are_read_only(c_sandbox: CSandbox, workdir: Path) -> None:
    prog = ("import os\n"
            "for p in ('/x', '/etc/passwd', '/etc/x', '/dev/x', '/usr/x', '/proc/x'):\n"
            "    try: open(p, 'a'); print('WROTE', p)\n"
            "    except OSError as e: print(p, e.errno)\n")
    r = c_sandbox.run([PYTHON, "-I", "-c", prog], limits=LIM, workdir=workdir)
    assert r.status is Status.OK, r
    assert b"WROTE" not in r.stdout, r.stdout


def test_the_box_user_has_a_name(c_sandbox: CSandbox, workdir: Path) -> None:
    r = c_sandbox.run(["/usr/bin/id", "-un"], limits=LIM, workdir=workdir)
    assert r.status is Status.OK and r.stdout == b"sandbox\n", r


FALLOCATE = r"""
import os, sys
where, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
step = min(size, 1 << 20)
done = 0
try:
    for i in range(n):
        fd = os.open(os.path.join(where, f"f{i}"), os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            for at in range(0, size, step):
                os.posix_fallocate(fd, at, step)
                done += step
        finally:
            os.close(fd)
except OSError as e:
    print("stopped", e.errno, done)
print("allocated", done)
"""

INODES = r"""
import os, sys
where = sys.argv[1]
n = 0
try:
    while n < 2_000_000:
        os.close(os.open(os.path.join(where, f"i{n}"), os.O_CREAT | os.O_WRONLY, 0o600))
        n += 1
except OSError as e:
    print("stopped", e.errno, n)
"""


def _free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_disk_fill_of_the_work_directory_ends_output_limit_and_spares_the_host(c_sandbox: CSandbox) -> None:
    """fallocate of 40 files of 64 MiB in a workspace stops at its size; the host's disks keep their space."""
    before = {p: _free(p) for p in ("/", "/var/tmp")}
    with open_workspace(size_kib=32 * 1024, inodes=1024) as ws:
        assert ws.bounded
        r = c_sandbox.run([PYTHON, "-I", "-c", FALLOCATE, str(ws.path), "40", str(64 << 20)], limits=LIM,
                          workdir=ws.path)
        assert r.status is Status.OUTPUT_LIMIT, r
        assert "bounded_workdir" in r.enforced
        assert b"stopped 28" in r.stdout  # ENOSPC
    for p, free in before.items():
        assert _free(p) > free - (64 << 20), f"{p} lost space to the box"


def test_disk_fill_of_tmp_ends_output_limit(c_sandbox: CSandbox, workdir: Path) -> None:
    lim = Limits(cpu_ms=5000, wall_ms=20000, memory_kib=512 * 1024, tmp_kib=8 * 1024)
    r = c_sandbox.run([PYTHON, "-I", "-c", FALLOCATE, "/tmp", "40", str(64 << 20)], limits=lim, workdir=workdir)
    assert r.status is Status.OUTPUT_LIMIT, r
    r = c_sandbox.run([PYTHON, "-I", "-c", FALLOCATE, "/dev/shm", "40", str(64 << 20)], limits=lim, workdir=workdir)
    assert r.status is Status.OUTPUT_LIMIT, r


def test_inode_fill_ends_output_limit(c_sandbox: CSandbox, workdir: Path) -> None:
    with open_workspace(size_kib=64 * 1024, inodes=2000) as ws:
        r = c_sandbox.run([PYTHON, "-I", "-c", INODES, str(ws.path)], limits=LIM, workdir=ws.path)
        assert r.status is Status.OUTPUT_LIMIT, r
        assert b"stopped 28" in r.stdout
    lim = Limits(cpu_ms=5000, wall_ms=20000, tmp_inodes=500)
    r = c_sandbox.run([PYTHON, "-I", "-c", INODES, "/tmp"], limits=lim, workdir=workdir)
    assert r.status is Status.OUTPUT_LIMIT, r


def test_an_honest_program_in_a_workspace_is_ok(c_sandbox: CSandbox) -> None:
    with open_workspace(size_kib=8 * 1024, inodes=256) as ws:
        r = c_sandbox.run([PYTHON, "-I", "-c", FALLOCATE, str(ws.path), "2", str(1 << 20)], limits=LIM,
                          workdir=ws.path)
        assert r.status is Status.OK, r
        assert (ws.path / "f1").stat().st_size == 1 << 20  # the caller reads what the box left
    assert not ws.path.exists()


DEEP = r"""
import os
for i in range(3000):
    os.mkdir("d")
    os.chdir("d")
open("leaf", "w").write("x")
print("deep")
"""


def test_a_deep_tree_left_in_a_workspace_goes_with_it(c_sandbox: CSandbox) -> None:
    with open_workspace() as ws:
        r = c_sandbox.run([PYTHON, "-I", "-c", DEEP], limits=LIM, workdir=ws.path)
        assert r.status is Status.OK and r.stdout == b"deep\n", r
    assert not ws.path.exists()


def test_workspaces_of_a_dead_process_are_swept(tmp_path: Path) -> None:
    """A worker killed with -9 leaves its mounted workspaces; the next one removes them."""
    root = tmp_path / "ws"
    code = ("import os, sys; from pathlib import Path; from conveyor_sandbox.workspace import open_workspace;"
            "ws = open_workspace(root=Path(sys.argv[1])); (ws.path / 'left').write_text('x');"
            "print(ws.path, flush=True); os.kill(os.getpid(), 9)")
    p = subprocess.run([os.sys.executable, "-c", code, str(root)], capture_output=True, text=True)
    left = Path(p.stdout.strip())
    assert p.returncode == -9 and (left / "left").exists(), p.stderr
    assert sweep(root) == [str(left)]
    assert not left.exists()


SYSCALLS = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
for nr in map(int, sys.argv[1:]):
    r = libc.syscall(nr, 0, 0, 0, 0, 0, 0)
    print(nr, r, ctypes.get_errno())
"""


def test_syscalls_newer_than_the_filter_fail_with_enosys(c_sandbox: CSandbox, workdir: Path) -> None:
    """statmount (457), listmount (458), open_tree_attr (467) and numbers no kernel has yet: ENOSYS, not allowed."""
    r = c_sandbox.run([PYTHON, "-I", "-c", SYSCALLS, "457", "458", "467", "470", "1000"], limits=LIM,
                      workdir=workdir)
    assert r.status is Status.OK, r
    for line in r.stdout.decode().splitlines():
        _nr, ret, err = line.split()
        assert (ret, err) == ("-1", "38"), line  # ENOSYS


def test_pidfd_getfd_is_denied(c_sandbox: CSandbox, workdir: Path) -> None:
    r = c_sandbox.run([PYTHON, "-I", "-c", SYSCALLS, "438"], limits=LIM, workdir=workdir)
    assert r.status is Status.SYSCALL_DENIED, r


def test_files_that_exhaust_the_memory_limit_end_output_limit(c_sandbox: CSandbox, workdir: Path) -> None:
    """tmpfs pages are charged to the box: a /tmp larger than the memory limit fills memory first."""
    lim = Limits(cpu_ms=5000, wall_ms=20000, memory_kib=64 * 1024, tmp_kib=512 * 1024)
    r = c_sandbox.run([PYTHON, "-I", "-c", FALLOCATE, "/tmp", "40", str(64 << 20)], limits=lim, workdir=workdir)
    assert r.status is Status.OUTPUT_LIMIT, r
    hog = "b = bytearray(200 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
    r = c_sandbox.run([PYTHON, "-I", "-c", hog], limits=lim, workdir=workdir)
    assert r.status is Status.MEMORY_LIMIT, r
