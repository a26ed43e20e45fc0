"""Built-in checkers on matching and mismatching outputs, edge cases included."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from conveyor_judge.checkers import FloatsChecker, IdenticalChecker, LinesChecker, StandardChecker
from conveyor_judge.problems import Problem, TestCase
from conveyor_judge.verdicts import Verdict

AC, WA, PE = Verdict.ACCEPTED, Verdict.WRONG_ANSWER, Verdict.PRESENTATION_ERROR
P = Problem("p", Path("/nonexistent"), "plain", (TestCase("1", Path("/x.in"), None),))


def v(checker, output: bytes, answer: bytes, problem: Problem = P) -> Verdict:
    return checker.check(b"", output, answer, problem).verdict


@pytest.mark.parametrize("output,answer,want", [
    (b"1 2 3\n", b"1 2 3\n", AC),
    (b"1\n2\n\n\n3", b"1 2 3\n", AC),  # blank lines and no trailing newline ignored
    (b"  1\t2 3  \r\n", b"1 2 3\n", AC),
    (b"1 2 4\n", b"1 2 3\n", WA),
    (b"1 2\n", b"1 2 3\n", WA),  # too short
    (b"1 2 3 4\n", b"1 2 3\n", WA),  # extra token
    (b"", b"1\n", WA),
    (b"", b"", AC),
    (b"1\x00\n", b"1\n", WA),  # a NUL byte is not whitespace
    (b"a\x00b\n", b"a\x00b\n", AC),
    (b"Yes\n", b"yes\n", WA),  # case matters
])
def test_standard(output, answer, want):
    assert v(StandardChecker(), output, answer) is want


def test_standard_message_names_the_token():
    res = StandardChecker().check(b"", b"1 2 4\n", b"1 2 3\n", P)
    assert "token 3" in res.message and "'3'" in res.message and "'4'" in res.message


def test_standard_very_long_line():
    line = b" ".join(str(i).encode() for i in range(300_000))  # about 2 MB on one line
    assert v(StandardChecker(), line, line + b"\n") is AC
    assert v(StandardChecker(), line[:-1] + b"0", line) is WA


@pytest.mark.parametrize("output,answer,want", [
    (b"1 2\n", b"1 2\n", AC),
    (b"1 2", b"1 2\n", PE),  # no trailing newline: whitespace-only difference
    (b"1  2\n", b"1 2\n", PE),
    (b"1 2\r\n", b"1 2\n", PE),
    (b"1 3\n", b"1 2\n", WA),
    (b"1\x002\n", b"1 2\n", WA),
    (b"x" * 1_000_000 + b"\n", b"x" * 1_000_000 + b"\n", AC),
])
def test_identical(output, answer, want):
    assert v(IdenticalChecker(), output, answer) is want


@pytest.mark.parametrize("output,answer,want", [
    (b"a b\nc\n", b"a b\nc\n", AC),
    (b"a b  \r\nc\t\r\n", b"a b\nc\n", AC),  # trailing whitespace and CRLF
    (b"a b\nc", b"a b\nc\n\n", AC),  # trailing blank lines, no final newline
    (b"a  b\nc\n", b"a b\nc\n", WA),  # inner whitespace matters
    (b"a b\n\nc\n", b"a b\nc\n", WA),  # a blank line inside matters
    (b"a b\n", b"a b\nc\n", WA),
    (b"a\x00\n", b"a\n", WA),
])
def test_lines(output, answer, want):
    assert v(LinesChecker(), output, answer) is want


@pytest.mark.parametrize("output,answer,want", [
    (b"1.0000001\n", b"1\n", AC),  # within 1e-6 absolute
    (b"1.000001\n", b"1\n", AC),  # exactly at the tolerance edge
    (b"1.0000011\n", b"1\n", WA),  # just past it
    (b"1000000.9\n", b"1000000\n", AC),  # within 1e-6 relative
    (b"1000001.1\n", b"1000000\n", WA),
    (b"1e-7\n", b"0\n", AC),
    (b"-0.0\n", b"0\n", AC),
    (b"nan\n", b"nan\n", WA),  # NaN is never equal, even to NaN
    (b"1\n", b"nan\n", WA),
    (b"inf\n", b"inf\n", AC),
    (b"inf\n", b"-inf\n", WA),
    (b"1e400\n", b"1\n", WA),
    (b"abc 1.0\n", b"abc 1\n", AC),  # non-numbers compared exactly
    (b"abd 1.0\n", b"abc 1\n", WA),
    (b"0x10\n", b"16\n", WA),
    (b"1.0 2.0", b"1 2 3", WA),
    (b"1.5\x00\n", b"1.5\n", WA),
])
def test_floats(output, answer, want):
    assert v(FloatsChecker(), output, answer) is want


def test_floats_tolerance_comes_from_the_problem():
    loose = replace(P, float_abs_tol=0.01, float_rel_tol=0.0)
    assert v(FloatsChecker(), b"3.14\n", b"3.14159\n", loose) is AC
    assert v(FloatsChecker(), b"3.14\n", b"3.14159\n") is WA


def test_checkers_are_registered_through_the_hook(judge):
    assert {"standard", "identical", "lines", "floats"} <= set(judge.checkers)
