"""The ``judge.submission`` job kind."""

from __future__ import annotations

import threading
from typing import Any

from conveyor.kinds import JobContext, JobKind, RetryPolicy
from conveyor_judge.engine import Judge
from conveyor_judge.errors import JudgeError
from conveyor_judge.problems import ProblemStore

KIND = "judge.submission"
_JUDGE: Judge | None = None
_LOCK = threading.Lock()


def shared_judge() -> Judge:
    """The process-wide Judge (sandbox, languages and checkers chosen once)."""
    global _JUDGE
    with _LOCK:
        if _JUDGE is None:
            _JUDGE = Judge()
        return _JUDGE


def _payload(ctx: JobContext) -> dict[str, Any]:
    p = ctx.payload
    if not isinstance(p, dict):
        raise JudgeError("invalid_payload", "judge.submission needs a JSON object payload: "
                                            '{"problem_id", "language", "source" or "source_key"}')
    if not isinstance(p.get("problem_id"), str):
        raise JudgeError("invalid_payload", "payload.problem_id must be the id `conveyor judge problem add` printed")
    if not isinstance(p.get("language"), str):
        raise JudgeError("invalid_payload", "payload.language must be a language id such as 'cpp' or 'python3'")
    has_src, has_key = isinstance(p.get("source"), str), isinstance(p.get("source_key"), str)
    if has_src == has_key:
        raise JudgeError("invalid_payload", "give exactly one of payload.source (text) and payload.source_key "
                                            "(a storage key)")
    if "run_all_tests" in p and not isinstance(p["run_all_tests"], bool):
        raise JudgeError("invalid_payload", "payload.run_all_tests must be true or false")
    return p


def handle_submission(ctx: JobContext) -> dict[str, Any]:
    """Judge one submission and return the verdict object."""
    p = _payload(ctx)
    judge = shared_judge()
    lang = judge.language(p["language"])
    problem = ProblemStore(ctx.storage, judge.root).load(p["problem_id"])
    if "source_key" in p:
        if not ctx.storage.exists(p["source_key"]):
            raise JudgeError("source_missing", f"source {p['source_key']!r} is not in storage")
        source = ctx.storage.get(p["source_key"])
    else:
        source = p["source"].encode("utf-8")
    result = judge.judge(problem, lang, source, cancelled=ctx.token.raise_if_cancelled,
                         run_all=p.get("run_all_tests"))
    return result.as_dict()


JOB_KIND = JobKind(KIND, handle_submission, retry=RetryPolicy(max_attempts=3, base_seconds=1.0, max_seconds=30.0),
                   timeout_s=900, description="compile and run a submission against a problem's tests; result: verdict")
