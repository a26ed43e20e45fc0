"""Verdicts and the records a judged submission produces."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Verdict(str, Enum):
    """The outcome of one test or of a whole submission."""

    ACCEPTED = "accepted"
    WRONG_ANSWER = "wrong_answer"
    PRESENTATION_ERROR = "presentation_error"
    TIME_LIMIT_EXCEEDED = "time_limit_exceeded"
    MEMORY_LIMIT_EXCEEDED = "memory_limit_exceeded"
    OUTPUT_LIMIT_EXCEEDED = "output_limit_exceeded"
    RUNTIME_ERROR = "runtime_error"
    COMPILE_ERROR = "compile_error"
    SYSTEM_ERROR = "system_error"

    def __str__(self) -> str:
        return self.value

    @property
    def short(self) -> str:
        """The two- or three-letter code judges print (AC, WA, TLE, …)."""
        return _SHORT[self]

    @property
    def label(self) -> str:
        """The human name (Accepted, Wrong Answer, …)."""
        return self.value.replace("_", " ").title()


_SHORT = {
    Verdict.ACCEPTED: "AC", Verdict.WRONG_ANSWER: "WA", Verdict.PRESENTATION_ERROR: "PE",
    Verdict.TIME_LIMIT_EXCEEDED: "TLE", Verdict.MEMORY_LIMIT_EXCEEDED: "MLE",
    Verdict.OUTPUT_LIMIT_EXCEEDED: "OLE", Verdict.RUNTIME_ERROR: "RE", Verdict.COMPILE_ERROR: "CE",
    Verdict.SYSTEM_ERROR: "SE",
}


@dataclass(frozen=True)
class TestResult:
    """One test case as judged."""

    __test__ = False  # not a pytest class
    name: str
    verdict: Verdict
    time_ms: int
    wall_ms: int
    memory_kib: int | None
    exit_code: int | None
    signal: int | None
    message: str = ""  # everything known: the checker's message, the stderr tail (admin only)
    output_preview: str = ""
    score: float = 0.0
    reason: str = ""  # the judge's own words (a limit, a signal, an exit code): never the test's data

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form with everything (the admin view)."""
        d = asdict(self)
        d["verdict"] = self.verdict.value
        return d


@dataclass(frozen=True)
class CompileResult:
    """What the compiler said."""

    ok: bool
    output: str = ""
    time_ms: int = 0
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


@dataclass(frozen=True)
class JudgeResult:
    """A judged submission: overall verdict, score, compile output and per-test rows."""

    verdict: Verdict
    score: float
    max_score: float
    language: str
    problem_id: str
    compile: CompileResult
    tests: tuple[TestResult, ...] = field(default_factory=tuple)
    tests_total: int = 0
    sandbox: str = ""
    message: str = ""  # admin view: names the failing test with its full message
    feedback: str = "verdict+time"  # the policy of what a submitter sees (conveyor_judge.feedback)

    @property
    def time_ms(self) -> int:
        """The slowest test's cpu time."""
        return max((t.time_ms for t in self.tests), default=0)

    @property
    def memory_kib(self) -> int:
        """The largest test's peak memory."""
        return max((t.memory_kib or 0 for t in self.tests), default=0)

    def as_dict(self, feedback: str | None = None) -> dict[str, Any]:
        """The job result a submitter may read, under ``feedback`` (default: the result's own policy)."""
        from conveyor_judge.feedback import Feedback, result_view
        return result_view(self, Feedback(feedback or self.feedback))

    def admin_dict(self) -> dict[str, Any]:
        """Everything, checker messages included: for operators, never for the submitter."""
        return {
            "verdict": self.verdict.value,
            "score": self.score,
            "max_score": self.max_score,
            "language": self.language,
            "problem_id": self.problem_id,
            "time_ms": self.time_ms,
            "memory_kib": self.memory_kib,
            "tests_total": self.tests_total,
            "tests_run": len(self.tests),
            "message": self.message,
            "feedback": self.feedback,
            "sandbox": self.sandbox,
            "compile": self.compile.as_dict(),
            "tests": [t.as_dict() for t in self.tests],
        }
