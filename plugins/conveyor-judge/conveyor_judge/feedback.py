"""What a submitter sees of a judged test: the feedback policy and the views of a result it allows."""

from __future__ import annotations

import logging
import os
from enum import Enum
from typing import TYPE_CHECKING, Any

from conveyor_judge.errors import JudgeError

if TYPE_CHECKING:
    from conveyor_judge.verdicts import JudgeResult, TestResult

log = logging.getLogger("conveyor.judge")

ENV = "CONVEYOR_JUDGE_FEEDBACK"


class Feedback(str, Enum):
    """How much of each test a submitter is shown."""

    VERDICT = "verdict"  # the verdict and score of each test
    VERDICT_TIME = "verdict+time"  # and its time, memory, exit code and the judge's own reason (limits, signals)
    FIRST_DIFFERENCE = "first_difference"  # and the checker's message, stderr tail and output preview

    def __str__(self) -> str:
        return self.value


DEFAULT = Feedback.VERDICT_TIME
NAMES = ", ".join(f.value for f in Feedback)


def parse_feedback(value: object, where: str) -> Feedback:
    """A policy from its name, or ``invalid_problem_package`` naming where the bad value came from."""
    try:
        return Feedback(str(value).strip().lower())
    except ValueError:
        raise JudgeError("invalid_problem_package",
                         f"{where}: feedback = {value!r} is not a policy; use one of {NAMES}") from None


def env_feedback() -> Feedback:
    """The deployment's policy (``CONVEYOR_JUDGE_FEEDBACK``); a bad value falls back to the strictest, loudly."""
    raw = os.environ.get(ENV)
    if not raw:
        return DEFAULT
    try:
        return Feedback(raw.strip().lower())
    except ValueError:
        log.warning("%s=%r is not one of %s; submitters get the strictest policy, 'verdict'", ENV, raw, NAMES)
        return Feedback.VERDICT


def resolve(problem_value: str | None) -> Feedback:
    """The policy of a problem: its own (``problem.toml`` or ``problem add --feedback``), else the deployment's."""
    if problem_value:
        try:
            return Feedback(problem_value)
        except ValueError:
            return Feedback.VERDICT
    return env_feedback()


def public_message(test: TestResult, policy: Feedback) -> str:
    """The message of one test a submitter may read under ``policy``."""
    if policy is Feedback.FIRST_DIFFERENCE:
        return test.message
    if policy is Feedback.VERDICT_TIME and test.reason:
        return test.reason
    return test.verdict.label


def row_view(test: TestResult, policy: Feedback) -> dict[str, Any]:
    """One test as a submitter sees it."""
    row: dict[str, Any] = {"name": test.name, "verdict": test.verdict.value, "score": test.score}
    if policy is Feedback.VERDICT:
        return row
    row |= {"time_ms": test.time_ms, "wall_ms": test.wall_ms, "memory_kib": test.memory_kib,
            "exit_code": test.exit_code, "signal": test.signal, "message": public_message(test, policy)}
    if policy is Feedback.FIRST_DIFFERENCE:
        row["output_preview"] = test.output_preview
    return row


def result_view(result: JudgeResult, policy: Feedback) -> dict[str, Any]:
    """The job result a submitter may read: nothing of the expected output, the checker or the test data
    unless the policy is ``first_difference``."""
    failed = next((t for t in result.tests if t.verdict.value != "accepted"), None)
    if failed is not None:
        message = f"test {failed.name}: {public_message(failed, policy)}"
    elif result.tests:
        message = f"{len(result.tests)} test(s) passed"
    else:
        message = result.compile.message if not result.compile.ok else result.message
    out: dict[str, Any] = {
        "verdict": result.verdict.value,
        "score": result.score,
        "max_score": result.max_score,
        "language": result.language,
        "problem_id": result.problem_id,
    }
    if policy is not Feedback.VERDICT:
        out |= {"time_ms": result.time_ms, "memory_kib": result.memory_kib}
    out |= {
        "tests_total": result.tests_total,
        "tests_run": len(result.tests),
        "message": message,
        "feedback": policy.value,
        "sandbox": result.sandbox,
        "compile": result.compile.as_dict(),
        "tests": [row_view(t, policy) for t in result.tests],
    }
    return out
