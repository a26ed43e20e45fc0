"""Language judges for Conveyor: problems, languages, checkers, verdicts and the ``judge.submission`` job kind."""

from __future__ import annotations

from conveyor_judge.checkers import Checker, CheckResult
from conveyor_judge.errors import JudgeError
from conveyor_judge.languages import Language
from conveyor_judge.verdicts import JudgeResult, TestResult, Verdict

__all__ = ["CheckResult", "Checker", "JudgeError", "JudgeResult", "Language", "TestResult", "Verdict"]
