"""Entry point of the judge plugin: languages, checkers, the job kind, error codes, CLI, HTTP routes, doctor
and demo."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from conveyor.plugin_api import ErrorCode, Family, hookimpl
from conveyor_judge.hookspecs import LANGUAGES

if TYPE_CHECKING:
    import click
    from fastapi import APIRouter

    from conveyor.plugin_api import Conveyor, Registry
    from conveyor_judge.hookspecs import CheckerRegister, LanguageRegister


@hookimpl
def conveyor_register_judges(registry: LanguageRegister) -> None:
    """Register C, C++17, C++20, Python 3, Java, Rust and JavaScript."""
    from conveyor_judge.languages import FIRST_PARTY

    for lang in FIRST_PARTY:
        registry.add(lang)


@hookimpl
def conveyor_register_checkers(registry: CheckerRegister) -> None:
    """Register the standard, identical, lines and floats checkers."""
    from conveyor_judge.checkers import BUILTIN_CHECKERS

    for checker in BUILTIN_CHECKERS:
        registry.add(checker)


@hookimpl
def conveyor_add_hookspecs(pluginmanager: Any) -> None:
    """Declare ``conveyor_register_judges`` and ``conveyor_register_checkers`` (``conveyor_judge.hookspecs``)."""
    from conveyor_judge import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def conveyor_families() -> Iterable[Family[Any]]:
    """The ``judges`` (languages) and ``checkers`` families."""
    from conveyor_judge.hookspecs import CHECKERS, LANGUAGES

    return (LANGUAGES, CHECKERS)


@hookimpl
def conveyor_register_job_kinds(registry: Registry) -> None:
    """Register ``judge.submission``."""
    from conveyor_judge.kind import JOB_KIND

    registry.add(JOB_KIND)


@hookimpl
def conveyor_error_codes() -> Iterable[ErrorCode]:
    """The judge's codes: problem packages, languages, checker programs."""
    from conveyor_judge.errors import CODES

    return CODES


@hookimpl
def conveyor_add_commands(cli: click.Group) -> None:
    """Add ``conveyor judge …``."""
    from conveyor_judge.cli import judge

    cli.add_command(judge)


@hookimpl
def conveyor_ui_pages() -> Iterable[Any]:
    """The dashboard's Problems page: problems, submitting from the browser, verdicts per test, a scoreboard."""
    from pathlib import Path

    from conveyor.plugin_api import UiPage

    return [UiPage("problems", "Problems", Path(__file__).parent / "ui" / "problems.js", order=20)]


@hookimpl
def conveyor_api_routes(router: APIRouter, app: Conveyor) -> None:
    """Add ``/problems``, ``/submit`` and ``/status/{job_id}`` to ``conveyor api`` (FastAPI is imported here only)."""
    from conveyor_judge.api import add_routes

    add_routes(router, app)


@hookimpl
def conveyor_doctor(app: Conveyor) -> list[dict[str, Any]]:
    """One finding per language: toolchain found and reachable by the sandbox."""
    import os

    from conveyor.plugin_api import get_plugins
    from conveyor_judge.feedback import ENV, NAMES, env_feedback
    out = []
    raw = os.environ.get(ENV)
    policy = env_feedback()
    bad = raw is not None and bool(raw) and raw.strip().lower() != policy.value
    out.append({"check": "judge feedback", "ok": not bad,
                "detail": f"{ENV}={raw!r} is not a policy; submitters get 'verdict'" if bad
                else f"submitters see: {policy.value}",
                "next_step": f"set {ENV} to one of {NAMES}" if bad else ""})
    for lang in get_plugins().registry(LANGUAGES):
        ok, why = lang.available()
        out.append({"check": f"judge {lang.id}", "ok": True,
                    "detail": ("available: " if ok else "UNAVAILABLE: ") + why,
                    "next_step": "" if ok else f"install the {lang.name} toolchain, or ignore if not offered"})
    return out


@hookimpl
def conveyor_demo(app: Conveyor, console: Any) -> bool:
    """Judge a few built-in submissions and print their verdicts."""
    from conveyor_judge.demo import run_judge_demo

    return run_judge_demo(app, console)


def _admin_findings(job: dict[str, Any], context: dict[str, Any]) -> list[dict[str, Any]]:
    """The checker's full message of the first failing test, from the attempt's admin record (operators only)."""
    app = context.get("app")
    if app is None or not job.get("id") or not job.get("attempt_id"):
        return []
    from conveyor_judge.kind import admin_key
    key = admin_key(str(job["id"]), int(job["attempt_id"]))
    try:
        if not app.storage.exists(key):
            return []
        import json
        admin = json.loads(app.storage.get(key))
    except Exception:  # an unreadable record only loses the extra detail
        return []
    return [{"check": "judge admin message", "ok": True,
             "detail": f"{admin.get('message', '')} (admin only: {key})", "next_step": ""}]


@hookimpl
def conveyor_diagnose(job: dict[str, Any], context: dict[str, Any]) -> list[dict[str, Any]] | None:
    """For judge.submission jobs: the verdict, or whether the problem and language are usable here."""
    if job.get("kind") != "judge.submission":
        return None
    result = job.get("result") or {}
    if isinstance(result, dict) and result.get("verdict"):
        return [{"check": "judge verdict", "ok": True, "detail": f"{result['verdict']}: {result.get('message', '')}",
                 "next_step": ""}, *_admin_findings(job, context)]
    payload = job.get("payload") or {}
    findings = []
    try:
        from conveyor_judge.kind import shared_judge
        lang = shared_judge().language(str(payload.get("language")))
        ok, why = lang.available()
        findings.append({"check": "judge language", "ok": ok, "detail": f"{lang.id}: {why}",
                         "next_step": "" if ok else "install the toolchain on the worker hosts"})
    except Exception as exc:
        findings.append({"check": "judge language", "ok": False, "detail": str(exc),
                         "next_step": "submit with a language listed by `conveyor judge languages`"})
    app = context.get("app")
    if app is not None:
        from conveyor_judge.problems import ProblemStore
        try:
            info = ProblemStore(app.storage).info(str(payload.get("problem_id")))
            findings.append({"check": "judge problem", "ok": True,
                             "detail": f"problem {info.id}: {info.tests} test(s), {info.format} layout",
                             "next_step": ""})
        except Exception as exc:
            findings.append({"check": "judge problem", "ok": False, "detail": str(exc),
                             "next_step": "add the problem with `conveyor judge problem add` and submit its id"})
    return findings


#: the environment variables this plugin reads
ENVIRONMENT = ("CONVEYOR_JUDGE_CACHE", "CONVEYOR_JUDGE_COMPILE_MEMORY_MIB", "CONVEYOR_JUDGE_COMPILE_TIME_MS",
               "CONVEYOR_JUDGE_FEEDBACK", "CONVEYOR_JUDGE_MAX_DEPTH", "CONVEYOR_JUDGE_MAX_DIRS",
               "CONVEYOR_JUDGE_MAX_FILES", "CONVEYOR_JUDGE_MAX_RATIO", "CONVEYOR_JUDGE_MAX_UNPACKED_MB",
               "CONVEYOR_JUDGE_PATH", "CONVEYOR_JUDGE_WORKSPACE_INODES", "CONVEYOR_JUDGE_WORKSPACE_MIB")


@hookimpl
def conveyor_environment() -> Iterable[str]:
    return ENVIRONMENT


@hookimpl
def conveyor_metrics(metrics: Any) -> None:
    """Declare this plugin's Prometheus families."""
    from conveyor_judge.metrics import families

    families(metrics)


@hookimpl
def conveyor_gc_keys(job: dict[str, Any]) -> list[str] | None:
    """The source an HTTP submit stored for this submission alone (``source_owned``), in its tenant's namespace."""
    from conveyor_judge.kind import KIND
    from conveyor_judge.sources import tenant_prefix
    payload = job.get("payload")
    if job.get("kind") != KIND or not isinstance(payload, dict) or payload.get("source_owned") is not True:
        return None
    key = payload.get("source_key")
    if isinstance(key, str) and key.startswith(tenant_prefix(str(job.get("tenant_id") or "default"))):
        return [key]
    return None
