"""What each box is handed: the program only its input, the checker only the current test, nobody the package."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor_judge.engine import Judge
from conveyor_judge.selftest import aplusb_package, program
from conveyor_judge.verdicts import Verdict
from conveyor_sandbox.contract import Limits, RunResult
from tests.judge.conftest import make_zip

PROGRAMS = Path(__file__).parent / "programs"
TESTS = ((5, 6), (70, 80), (900, 1000))


@dataclass(frozen=True)
class Box:
    """One sandbox run as the box found it: its arguments and the files of its work directory."""

    argv: tuple[str, ...]
    workdir: Path
    readonly: tuple[str, ...]
    stdin: bytes | None
    files: dict[str, bytes]


class RecordingSandbox:
    """The real sandbox; every run is recorded with a snapshot of its work directory first."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.id = inner.id  # type: ignore[attr-defined]
        self.priority = inner.priority  # type: ignore[attr-defined]
        self.boxes: list[Box] = []

    def available(self) -> tuple[bool, str]:
        return self.inner.available()  # type: ignore[attr-defined]

    def run(self, argv, *, limits: Limits | None = None, stdin: bytes | None = None, workdir, env=None,
            readonly_paths=()) -> RunResult:
        ro = tuple(str(p) for p in readonly_paths)
        files: dict[str, bytes] = {}
        for dirpath, _, names in os.walk(workdir):
            for n in names:
                p = Path(dirpath) / n
                rel = p.relative_to(workdir).as_posix()
                files[rel] = p.read_bytes()[:4096] if p.is_file() else b"<special>"
        self.boxes.append(Box(tuple(argv), Path(workdir), ro, stdin, files))
        return self.inner.run(argv, limits=limits, stdin=stdin, workdir=workdir, env=env,  # type: ignore[attr-defined]
                              readonly_paths=ro)


@pytest.fixture
def spy(judge) -> tuple[Judge, RecordingSandbox]:
    rec = RecordingSandbox(judge.sandbox)
    return Judge(sandbox=rec, languages=judge.languages.values(), checkers=judge.checkers.values(),
                 root=judge.root), rec


def _inside(path: str | Path, root: Path) -> bool:
    p, r = os.path.realpath(path), os.path.realpath(root)
    return p == r or p.startswith(r + "/")


def _never_the_package(boxes: list[Box], root: Path) -> None:
    """No box's work directory, read-only path or argument is (or holds) the problem cache."""
    problems = root / "problems"
    for box in boxes:
        assert not _inside(box.workdir, problems), box
        for ro in box.readonly:
            assert not _inside(ro, problems) and not _inside(problems, ro), box
            assert not _inside(root, ro), f"{ro} would show the whole judge cache"
        assert not any(str(problems) in a for a in box.argv), box


def test_the_program_gets_its_input_and_the_checker_the_current_test_only(spy, store):
    judge, rec = spy
    pkg = aplusb_package("checker_source = 'check.c'\nrun_all_tests = true\n",
                         {"check.c": (PROGRAMS / "sum_checker.c").read_text()}, tests=TESTS)
    problem = store.load(store.add(pkg).id)
    res = judge.judge(problem, "c", program("c", "aplusb").encode())
    assert res.verdict is Verdict.ACCEPTED, res.admin_dict()
    _never_the_package(rec.boxes, judge.root)
    runs = [b for b in rec.boxes if b.workdir.name == "run"]
    checks = [b for b in rec.boxes if b.workdir.name == "check"]
    assert len(runs) == len(checks) == len(TESTS)
    lang = judge.language("c")
    for i, (box, test) in enumerate(zip(runs, problem.tests)):
        assert box.files == {} and box.stdin == test.input.read_bytes()
        assert box.workdir.parent.name == f"t{i}"
        build = Path(box.argv[0]).parent
        assert list(box.readonly) == [str(build), *lang.box_paths()]
    answers = {t.answer.read_bytes() for t in problem.tests}
    for box, test in zip(checks, problem.tests):
        assert sorted(box.files) == ["answer.txt", "input.txt", "output.txt"]
        assert box.files["answer.txt"] == test.answer.read_bytes()
        assert box.files["input.txt"] == test.input.read_bytes()
        assert box.stdin is None
    # an answer is in no other box: not in a compile, not in a run
    for box in rec.boxes:
        if box not in checks:
            assert not any(data in answers for data in box.files.values()), box


def test_interactive_boxes_get_only_their_side(spy, store):
    judge, rec = spy
    files = {"1.in": "1\n", "1.ans": "secret-answer-1\n", "2.in": "777777777\n", "2.ans": "secret-answer-2\n",
             "interactor.c": (PROGRAMS / "guess_interactor.c").read_text(), "problem.toml": "time_limit_ms = 1000\n"}
    problem = store.load(store.add(make_zip(files)).id)
    res = judge.judge(problem, "c", (PROGRAMS / "guess_ok.c").read_bytes())
    assert res.verdict is Verdict.ACCEPTED, res.admin_dict()
    _never_the_package(rec.boxes, judge.root)
    subs = [b for b in rec.boxes if b.workdir.name == "run"]
    inters = [b for b in rec.boxes if b.workdir.name == "interactor"]
    assert len(subs) == len(inters) == 2
    for sub, inter, test in zip(subs, inters, problem.tests):
        assert sub.files == {} and sub.stdin is None
        # the submission reads the build and its test's two FIFOs, nothing of the interactor's side
        assert Path(sub.readonly[1]) == sub.workdir.parent / "pipes"
        assert not any(_inside(ro, inter.workdir) for ro in sub.readonly)
        assert sorted(inter.files) == ["answer.txt", "input.txt", "tout.txt"]
        assert inter.files["answer.txt"] == test.answer.read_bytes()
