"""Output checkers: the built-in comparators registered through ``conveyor_register_checkers``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from conveyor_judge.verdicts import Verdict

if TYPE_CHECKING:
    from conveyor_judge.problems import Problem


@dataclass(frozen=True)
class CheckResult:
    """A checker's judgement of one output."""

    verdict: Verdict
    message: str = ""
    score: float | None = None  # None: all of the test's points when accepted, none otherwise


@runtime_checkable
class Checker(Protocol):
    """Compares a program's output with the expected answer."""

    @property
    def id(self) -> str:
        """The id problems name in ``checker = "…"``."""
        ...

    @property
    def description(self) -> str:
        """One line for listings."""
        ...

    def check(self, input: bytes, output: bytes, answer: bytes, problem: Problem) -> CheckResult:
        """Judge ``output`` for a test with this ``input`` and expected ``answer``."""
        ...


def _show(token: bytes, limit: int = 40) -> str:
    text = token[:limit].decode("utf-8", "backslashreplace")
    return repr(text + ("…" if len(token) > limit else ""))


def _token_diff(output: bytes, answer: bytes) -> str:
    out, ans = output.split(), answer.split()
    for i, (a, b) in enumerate(zip(out, ans), 1):
        if a != b:
            return f"token {i}: expected {_show(b)}, got {_show(a)}"
    if len(out) < len(ans):
        return f"output ends after {len(out)} token(s); expected {len(ans)}, next {_show(ans[len(out)])}"
    return f"extra output after {len(ans)} token(s): {_show(out[len(ans)])}"


@dataclass(frozen=True)
class StandardChecker:
    """Tokens compared; whitespace and blank lines ignored."""

    id: str = "standard"
    description: str = "tokens compared, whitespace and blank lines ignored"

    def check(self, input: bytes, output: bytes, answer: bytes, problem: Problem) -> CheckResult:
        """Accepted when the whitespace-separated tokens are equal."""
        if output.split() == answer.split():
            return CheckResult(Verdict.ACCEPTED, "ok")
        return CheckResult(Verdict.WRONG_ANSWER, _token_diff(output, answer))


@dataclass(frozen=True)
class IdenticalChecker:
    """Byte-exact; a whitespace-only difference is a Presentation Error."""

    id: str = "identical"
    description: str = "byte-exact; whitespace-only differences are Presentation Error"

    def check(self, input: bytes, output: bytes, answer: bytes, problem: Problem) -> CheckResult:
        """Accepted only when the bytes are identical."""
        if output == answer:
            return CheckResult(Verdict.ACCEPTED, "ok")
        if output.split() == answer.split():
            at = next((i for i, (a, b) in enumerate(zip(output, answer)) if a != b), min(len(output), len(answer)))
            return CheckResult(Verdict.PRESENTATION_ERROR, f"whitespace differs from byte {at}")
        return CheckResult(Verdict.WRONG_ANSWER, _token_diff(output, answer))


def _lines(data: bytes) -> list[bytes]:
    lines = [ln.rstrip(b" \t\r") for ln in data.replace(b"\r\n", b"\n").split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


@dataclass(frozen=True)
class LinesChecker:
    """Line by line; trailing whitespace, CRLF and trailing blank lines ignored."""

    id: str = "lines"
    description: str = "line by line; trailing whitespace per line and CRLF ignored"

    def check(self, input: bytes, output: bytes, answer: bytes, problem: Problem) -> CheckResult:
        """Accepted when every line matches after trimming its end."""
        out, ans = _lines(output), _lines(answer)
        for i, (a, b) in enumerate(zip(out, ans), 1):
            if a != b:
                return CheckResult(Verdict.WRONG_ANSWER, f"line {i}: expected {_show(b)}, got {_show(a)}")
        if len(out) != len(ans):
            return CheckResult(Verdict.WRONG_ANSWER, f"expected {len(ans)} line(s), got {len(out)}")
        return CheckResult(Verdict.ACCEPTED, "ok")


_NUMBER = re.compile(rb"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE)


def _as_float(token: bytes) -> float | None:
    if not _NUMBER.fullmatch(token):
        return None
    return float(token)


@dataclass(frozen=True)
class FloatsChecker:
    """Tokens compared; numbers within an absolute or relative tolerance; NaN is never equal."""

    id: str = "floats"
    description: str = "numbers within float_abs_tol or float_rel_tol; NaN never equal"

    def check(self, input: bytes, output: bytes, answer: bytes, problem: Problem) -> CheckResult:
        """Accepted when every token matches, numbers within tolerance."""
        out, ans = output.split(), answer.split()
        abs_tol, rel_tol = problem.float_abs_tol, problem.float_rel_tol
        if len(out) != len(ans):
            return CheckResult(Verdict.WRONG_ANSWER, _token_diff(output, answer))
        for i, (a, b) in enumerate(zip(out, ans), 1):
            fb = _as_float(b)
            if fb is None:
                if a != b:
                    return CheckResult(Verdict.WRONG_ANSWER, f"token {i}: expected {_show(b)}, got {_show(a)}")
                continue
            fa = _as_float(a)
            if fa is None:
                return CheckResult(Verdict.WRONG_ANSWER,
                                   f"token {i}: expected a number near {_show(b)}, got {_show(a)}")
            if math.isnan(fa) or math.isnan(fb):
                return CheckResult(Verdict.WRONG_ANSWER, f"token {i}: NaN is never equal ({_show(a)} vs {_show(b)})")
            if math.isinf(fa) or math.isinf(fb):
                if fa != fb:
                    return CheckResult(Verdict.WRONG_ANSWER, f"token {i}: expected {_show(b)}, got {_show(a)}")
                continue
            diff = abs(fa - fb)
            # the tolerance is inclusive; a tiny slack absorbs the binary rounding of the decimal inputs
            if diff > abs_tol * (1 + 1e-9) and diff > rel_tol * abs(fb) * (1 + 1e-9):
                return CheckResult(Verdict.WRONG_ANSWER,
                                   f"token {i}: expected {_show(b)}, got {_show(a)} (difference {diff:.3g} > "
                                   f"abs {abs_tol:g} and rel {rel_tol:g})")
        return CheckResult(Verdict.ACCEPTED, "ok")


BUILTIN_CHECKERS: tuple[Checker, ...] = (StandardChecker(), IdenticalChecker(), LinesChecker(), FloatsChecker())
