"""What a program leaves in its work directory never fails its job or any later one."""

from __future__ import annotations

import logging
import os
import tempfile
import time
import traceback
import uuid
from pathlib import Path

import pytest

from conveyor_judge.engine import Judge, sweep_runs
from conveyor_judge.selftest import program
from conveyor_judge.verdicts import Verdict
from conveyor_sandbox.cleanup import remove_tree

#: A+B that first digs 3,000 folders deep in its work directory, locking every tenth one (mode 000) with a file
DIGGER = """
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
int main(void) {
    for (int i = 0; i < 3000; i++) {
        if (mkdir("d", 0700) != 0 || chdir("d") != 0) break;
        if (i % 10 == 0) {
            FILE *f = fopen("f", "w");
            if (f) fclose(f);
            chmod("..", 0);
        }
    }
    long long a, b;
    if (scanf("%lld %lld", &a, &b) != 2) return 1;
    printf("%lld\\n", a + b);
    return 0;
}
"""


def _deep(root: Path, depth: int, uid: int | None = None) -> None:
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(depth):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        if uid is not None:
            os.fchown(nfd, uid, uid)
        if i % 10 == 0:
            os.fchmod(fd, 0)
        os.close(fd)
        fd = nfd
    os.close(fd)


@pytest.fixture(scope="module")
def roomy(store):
    """A+B with room for the digging: 10 s of cpu (each mkdir is kernel time)."""
    from conveyor_judge.selftest import aplusb_package
    return store.load(store.add(aplusb_package("time_limit_ms = 10000\nmemory_limit_mib = 64\n",
                                               tests=((1, 2), (3, 4)))).id)


def _runs(judge: Judge) -> set[str]:
    return set(os.listdir(judge.root / "runs"))


def test_a_3000_deep_tree_from_a_program_is_removed_and_the_next_job_is_judged(judge, roomy, aplusb):
    before = _runs(judge)
    res = judge.judge(roomy, "c", DIGGER.encode())
    assert res.verdict is Verdict.ACCEPTED, res.admin_dict()
    assert _runs(judge) == before, "the work directories are gone"
    again = judge.judge(aplusb, "c", program("c", "aplusb").encode())
    assert again.verdict is Verdict.ACCEPTED
    assert _runs(judge) == before


def test_an_aged_deep_leftover_is_swept_when_a_judge_starts(judge, aplusb):
    leftover = judge.root / "runs" / uuid.uuid4().hex
    _deep(leftover, 3000, uid=60999)
    old = time.time() - 7 * 3600
    os.utime(leftover, (old, old))
    fresh = Judge(sandbox=judge.sandbox, languages=judge.languages.values(), checkers=judge.checkers.values(),
                  root=judge.root)
    assert not leftover.exists()
    assert fresh.judge(aplusb, "c", program("c", "aplusb").encode()).verdict is Verdict.ACCEPTED


def test_a_leftover_that_cannot_be_removed_is_logged_and_skipped(caplog):
    """The sweep runs as an unprivileged owner: a tree of root's cannot go, the other leftovers still do."""
    root = Path(tempfile.mkdtemp(prefix="conveyor-judge-sweep-", dir="/var/tmp"))
    try:
        os.chmod(root, 0o755)
        runs = root / "runs"
        runs.mkdir()
        os.chown(runs, 65534, 65534)
        stuck = runs / "stuck"
        (stuck / "roots").mkdir(parents=True)
        (stuck / "roots" / "file").write_text("x")
        os.chmod(stuck / "roots", 0o755)
        os.chown(stuck, 65534, 65534)
        _deep(runs / "deep", 3000, uid=65534)
        os.chown(runs / "deep", 65534, 65534)
        old = time.time() - 7 * 3600
        for p in (stuck, runs / "deep"):
            os.utime(p, (old, old))
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                with caplog.at_level(logging.WARNING, logger="conveyor.judge"):
                    removed = sweep_runs(root)
                ok = removed == 1 and "stuck" in caplog.text and "cannot remove" in caplog.text
                os.write(w, f"removed={removed} log={caplog.text[-500:]}".encode())
                code = 0 if ok else 1
            except BaseException:
                os.write(w, traceback.format_exc().encode()[-3000:])
                code = 2
            os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            report = f.read().decode()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, report
        assert not (runs / "deep").exists() and (stuck / "roots" / "file").exists()
    finally:
        remove_tree(root)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_digger_through_the_job_pipeline(app, pipeline):
    from conveyor_judge.problems import ProblemStore
    from conveyor_judge.selftest import aplusb_package
    pid = ProblemStore(app.storage).add(aplusb_package("time_limit_ms = 10000\n", tests=((1, 2),))).id
    ids = [app.submit("judge.submission", {"problem_id": pid, "language": "c", "source": src})
           for src in (DIGGER, program("c", "aplusb"))]
    with pipeline(concurrency=1) as p:
        jobs = p.wait(ids, timeout=300)
    assert [(j.status.value, j.error_code, (j.result or {}).get("verdict")) for j in jobs] == \
        [("succeeded", None, "accepted")] * 2
