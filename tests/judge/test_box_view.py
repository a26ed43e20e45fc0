"""Submissions that attack the host through the box: searching it, filling its disk.

The judge's cache (unpacked problems), a job database and a configuration file are placed
under /var/tmp, outside /tmp, as a deployment has them.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor_judge.verdicts import Verdict

SEARCH = r'''
import os, stat, sys
a, b = map(int, sys.stdin.read().split())
leaks = []
for top, dirs, files in os.walk("/"):
    if top in ("/proc", "/usr"):
        dirs[:] = []
        continue
    for name in files:
        path = os.path.join(top, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISSOCK(st.st_mode) or name.endswith((".zip", ".in", ".ans", ".out", ".db", ".toml", ".env")):
            leaks.append(path)
print(a + b if not leaks else "LEAK " + " ".join(leaks[:5]))
'''


@pytest.fixture
def host_files() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="conveyor-deploy-", dir="/var/tmp"))
    base.chmod(0o755)
    (base / "conveyor.db").write_bytes(b"SQLite format 3\0")
    (base / "conveyor.toml").write_text('db_url = "postgresql://app:hunter2@db/prod"\n')
    (base / "conveyor.toml").chmod(0o644)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(base / "db.sock"))
    os.chmod(base / "db.sock", 0o777)
    srv.listen(1)
    try:
        yield base
    finally:
        srv.close()
        shutil.rmtree(base)


def test_a_submission_searching_the_host_finds_nothing(judge, aplusb, host_files: Path) -> None:
    """The answers, packages, database, configuration and sockets of the host are not in the box."""
    assert any(judge.root.rglob("*.ans")) or any(judge.root.rglob("*.out")), "the cache holds the answers"
    res = judge.judge(aplusb, "python3", SEARCH.encode())
    assert res.verdict is Verdict.ACCEPTED, res.as_dict()


FILL = r'''
import os, sys
a, b = map(int, sys.stdin.read().split())
for i in range(40):  # each file as large as RLIMIT_FSIZE lets it grow (Python ignores SIGXFSZ)
    try:
        fd = os.open(f"f{i}", os.O_CREAT | os.O_WRONLY, 0o600)
        for at in range(0, 64 << 20, 1 << 20):
            os.posix_fallocate(fd, at, 1 << 20)
    except OSError:
        pass
print(a + b)
'''


def _free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_a_submission_filling_the_disk_ends_output_limit_and_spares_the_host(judge, aplusb, monkeypatch) -> None:
    """2.5 GB of fallocate over 40 files stops at the submission's workspace; the host's disks keep their space."""
    monkeypatch.setenv("CONVEYOR_JUDGE_WORKSPACE_MIB", "64")
    before = {p: _free(p) for p in ("/", "/var/tmp", str(judge.root))}
    res = judge.judge(aplusb, "python3", FILL.encode())
    assert res.verdict is Verdict.OUTPUT_LIMIT_EXCEEDED, res.as_dict()
    for p, free in before.items():
        assert _free(p) > free - (64 << 20), f"{p} lost space to the submission"
    ok = judge.judge(aplusb, "python3", b"print(sum(map(int, input().split())))\n")
    assert ok.verdict is Verdict.ACCEPTED, ok.as_dict()


def test_a_misspelled_workspace_size_falls_back_to_the_default(monkeypatch) -> None:
    from conveyor_judge.engine import workspace_size

    monkeypatch.setenv("CONVEYOR_JUDGE_WORKSPACE_MIB", "lots")
    assert workspace_size() == (512 * 1024, 16384)
