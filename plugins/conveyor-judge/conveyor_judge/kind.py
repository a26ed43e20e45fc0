"""The ``judge.submission`` job kind."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from typing import Any

from conveyor.plugin_api import JobContext, JobKind, RetryPolicy
from conveyor_judge.engine import Judge
from conveyor_judge.errors import JudgeError
from conveyor_judge.problems import Problem, ProblemStore
from conveyor_judge.sources import owned_key
from conveyor_judge.verdicts import JudgeResult

KIND = "judge.submission"
#: the full result, checker messages included, for operators: next to the attempt, never in the job result
ADMIN_ARTIFACT = "judge-admin.json"
#: optional payload limits (cpu ms, MiB): honoured up to the problem's own, a larger value is capped to it
LIMIT_KEYS = ("time_limit_ms", "memory_limit_mib")
#: the largest value a payload limit may name (it is capped to the problem's anyway)
LIMIT_MAX = 2**31 - 1
_JUDGE: Judge | None = None
_LOCK = threading.Lock()
log = logging.getLogger("conveyor.judge")


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
    for key in LIMIT_KEYS:
        value = p.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 1 <= value <= LIMIT_MAX):
            raise JudgeError("invalid_payload", f"payload.{key} must be a whole number from 1 to {LIMIT_MAX} "
                                                "(a value above the problem's limit is capped to it)")
    return p


def capped_limits(problem: Problem, time_limit_ms: int | None, memory_limit_mib: int | None) -> Problem:
    """The problem with a submission's own limits, each at most the problem's (a larger one is capped)."""
    if time_limit_ms is not None:
        problem = replace(problem, time_limit_ms=min(problem.time_limit_ms, time_limit_ms))
    if memory_limit_mib is not None:
        problem = replace(problem, memory_limit_mib=min(problem.memory_limit_mib, memory_limit_mib))
    return problem


def admin_key(job_id: str, attempt_id: int) -> str:
    """Storage key of an attempt's admin record (removed with the job's artifacts by `conveyor gc`)."""
    return f"jobs/{job_id}/{attempt_id}/{ADMIN_ARTIFACT}"


def _keep_admin_record(ctx: JobContext, result: JudgeResult) -> None:
    """Store everything the submitter is not shown; a storage hiccup never costs the verdict."""
    try:
        ctx.storage.put(admin_key(ctx.job_id, ctx.attempt_id), json.dumps(result.admin_dict()).encode())
    except Exception as exc:  # the verdict matters more than its admin copy
        log.warning("job %s: cannot store the judge's admin record (%s)", ctx.job_id, exc)


def handle_submission(ctx: JobContext) -> dict[str, Any]:
    """Judge one submission and return the verdict object a submitter may read."""
    p = _payload(ctx)
    judge = shared_judge()
    lang = judge.language(p["language"])
    problem = ProblemStore(ctx.storage, judge.root).load(p["problem_id"])
    problem = capped_limits(problem, p.get("time_limit_ms"), p.get("memory_limit_mib"))
    if "source_key" in p:
        key = owned_key(ctx.storage, p["source_key"], ctx.tenant_id, ctx.services.get("app"))
        source = ctx.storage.get(key)
    else:
        source = p["source"].encode("utf-8")
    result = judge.judge(problem, lang, source, cancelled=ctx.token.raise_if_cancelled,
                         run_all=p.get("run_all_tests"))
    _keep_admin_record(ctx, result)
    from conveyor.plugin_api import logline
    from conveyor_judge.metrics import observe
    observe(result)
    logline("judged", job_id=ctx.job_id, attempt_id=ctx.attempt_id, language=result.language,
            verdict=result.verdict.value, score=result.score, tests_run=len(result.tests), time_ms=result.time_ms,
            sandbox=result.sandbox)
    return result.as_dict()


JOB_KIND = JobKind(KIND, handle_submission, retry=RetryPolicy(max_attempts=3, base_seconds=1.0, max_seconds=30.0),
                   timeout_s=900, description="compile and run a submission against a problem's tests; result: verdict")
