"""Contract tests every judge language plugin must pass (pytest).

Subclass ``JudgeContract`` in a test module, set ``language`` to the language id and give
the three programs; the suite judges each against a built-in A+B problem in the real sandbox.
``judge`` may be overridden as a fixture to use a particular Judge instance.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import pytest

from conveyor.plugin_api import Storage
from conveyor_judge.engine import Judge
from conveyor_judge.problems import ProblemStore
from conveyor_judge.selftest import aplusb_package


class JudgeContract:
    """A+B accepted, a wrong answer, and a compile error where the language compiles."""

    language: ClassVar[str] = ""
    #: reads two integers from stdin and prints their sum
    aplusb: ClassVar[str] = ""
    #: reads two integers and prints something else
    wrong: ClassVar[str] = ""
    #: does not compile (or fails its syntax check); None only if the language has no compile step
    compile_error: ClassVar[str | None] = None

    @pytest.fixture(scope="class")
    @classmethod
    def judge(cls) -> Any:
        """The Judge under test (entry-point languages, checkers and the best sandbox)."""
        return Judge()

    @pytest.fixture(scope="class")
    @classmethod
    def problem(cls, judge: Any) -> Any:
        """The A+B problem, stored on private memory storage."""
        store = ProblemStore(Storage(f"memory://judge-contract-{uuid.uuid4().hex[:8]}"), judge.root)
        return store.load(store.add(aplusb_package()).id)

    def _judge(self, judge: Any, problem: Any, source: str) -> Any:
        assert self.language, "set `language` on the JudgeContract subclass"
        return judge.judge(problem, self.language, source.encode())

    def test_language_is_registered_and_available(self, judge: Any) -> None:
        lang = judge.language(self.language)
        ok, why = lang.available()
        assert ok, f"{self.language}: {why}"

    def test_aplusb_is_accepted(self, judge: Any, problem: Any) -> None:
        res = self._judge(judge, problem, self.aplusb)
        assert res.verdict.value == "accepted", res.as_dict()
        assert len(res.tests) == len(problem.tests) and res.score == problem.max_score
        assert all(t.time_ms >= 0 and t.exit_code == 0 for t in res.tests)

    def test_wrong_answer_stops_at_the_first_failing_test(self, judge: Any, problem: Any) -> None:
        res = self._judge(judge, problem, self.wrong)
        assert res.verdict.value == "wrong_answer", res.as_dict()
        assert len(res.tests) == 1 and res.score == 0
        assert res.tests[0].output_preview.strip() != "3"

    def test_compile_error_is_a_verdict_with_the_compiler_output(self, judge: Any, problem: Any) -> None:
        lang = judge.language(self.language)
        if self.compile_error is None:
            assert lang.compile is None, "the language compiles: give `compile_error`"
            return
        res = self._judge(judge, problem, self.compile_error)
        assert res.verdict.value == "compile_error", res.as_dict()
        assert res.tests == () and res.compile.output.strip() and not res.compile.ok
