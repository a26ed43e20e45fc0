"""``conveyor judge …``: problems, submissions, languages, self-test."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from conveyor.plugin_api import printable
from conveyor_judge.errors import JudgeError
from conveyor_judge.hookspecs import LANGUAGES

TERMINAL = ("succeeded", "failed", "cancelled")


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(code)


def _app(ctx: click.Context, need_db: bool = True) -> Any:
    from conveyor.plugin_api import deployment
    return deployment(ctx, need_db=need_db)


def _console() -> Any:
    from rich.console import Console
    return Console(width=None if sys.stdout.isatty() else 120)


def verdict_table(result: dict[str, Any], title: str = "") -> Any:
    """A rich table of one judged submission."""
    from rich.table import Table
    table = Table(title=title or f"{result['verdict']}  score {result['score']:g}/{result['max_score']:g}  "
                                 f"({result['language']}, problem {result['problem_id']})")
    for col in ("test", "verdict", "time ms", "memory KiB", "exit", "message"):
        table.add_column(col, justify="right" if col in ("time ms", "memory KiB", "exit") else "left")
    for t in result["tests"]:
        exit_text = f"sig {t['signal']}" if t.get("signal") else str(t.get("exit_code", "-"))
        table.add_row(printable(t["name"]), t["verdict"], str(t.get("time_ms", "-")), str(t.get("memory_kib") or "-"),
                      exit_text, printable((t.get("message") or "")[:80]))
    return table


@click.group()
def judge() -> None:
    """Language judges: problems, submissions, verdicts."""


@judge.group()
def problem() -> None:
    """Problem packages."""


@problem.command("add")
@click.argument("package", type=click.Path(exists=True, path_type=Path))
@click.option("--time-limit", "time_limit", type=click.IntRange(1, 60_000), help="Per-test cpu time, ms.")
@click.option("--memory-limit", "memory_limit", type=click.IntRange(1, 4096), help="Memory, MiB.")
@click.option("--feedback", type=click.Choice(["verdict", "verdict+time", "first_difference"]),
              help="What submitters see of each test (default: the problem's, else CONVEYOR_JUDGE_FEEDBACK).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def problem_add(ctx: click.Context, package: Path, time_limit: int | None, memory_limit: int | None,
                feedback: str | None, as_json: bool) -> None:
    """Store a problem package (a zip or a directory) and print its id."""
    from conveyor_judge.problems import ProblemStore, zip_directory
    app = _app(ctx, need_db=False)
    try:
        data = zip_directory(package) if package.is_dir() else package.read_bytes()
        info = ProblemStore(app.storage).add(data, time_limit_ms=time_limit, memory_limit_mib=memory_limit,
                                              feedback=feedback, label=str(package))
    except JudgeError as exc:
        _fail(f"{exc.code}: {exc.message}")
        return
    except OSError as exc:
        _fail(f"invalid_problem_package: {package}: cannot be read ({exc.strerror or exc})")
        return
    if as_json:
        click.echo(json.dumps(info.as_dict(), indent=2))
    else:
        click.echo(info.id)
        click.echo(f"{info.tests} test(s), {info.format} layout", err=True)


@problem.command("list")
@click.pass_context
def problem_list(ctx: click.Context) -> None:
    """List stored problems."""
    from conveyor_judge.problems import ProblemStore
    for info in ProblemStore(_app(ctx, need_db=False).storage).list():
        click.echo(f"{info.id}  {info.tests:>4} tests  {info.format:<7} {printable(info.name)}")


NO_WORKER_HINT_S = 3.0


def _live_workers(app: Any) -> int:
    """How many worker processes have shown progress lately (0 when the table cannot be read)."""
    from conveyor.plugin_api import list_workers
    try:
        return sum(1 for w in list_workers(app.engine, stale_after_s=30) if w["alive"] and w["role"] == "worker")
    except Exception:  # a hint only: never fail the wait over it
        return 0


@judge.command("submit")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--problem", "problem_id", required=True, help="Problem id from `conveyor judge problem add`.")
@click.option("--language", "-l", help="Language id or alias; inferred from the file extension if omitted.")
@click.option("--wait", is_flag=True, help="Wait for the verdict and print it.")
@click.option("--json", "as_json", is_flag=True, help="With --wait: print the result object as JSON.")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds --wait waits.")
@click.pass_context
def submit(ctx: click.Context, source: Path, problem_id: str, language: str | None, wait: bool, as_json: bool,
           timeout: float) -> None:
    """Submit SOURCE for judging; print the job id, or with --wait the verdict."""
    from conveyor.plugin_api import get_plugins
    from conveyor_judge.engine import SOURCE_MAX_BYTES, find_language, language_for_file
    from conveyor_judge.problems import ProblemStore
    app = _app(ctx)
    langs = list(get_plugins().registry(LANGUAGES))
    try:
        lang = find_language(langs, language) if language else language_for_file(langs, source.name)
        ProblemStore(app.storage).info(problem_id)
    except JudgeError as exc:
        _fail(f"{exc.code}: {exc.message}", 2)
        return
    raw = source.read_bytes()
    if len(raw) > SOURCE_MAX_BYTES:
        _fail(f"{source} is {len(raw)} bytes; submissions are limited to {SOURCE_MAX_BYTES}", 2)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(f"{source} is not UTF-8 text ({exc}); save it as UTF-8", 2)
        return
    job_id = app.submit("judge.submission", {"problem_id": problem_id, "language": lang.id, "source": text})
    if not wait:
        click.echo(job_id)
        return
    deadline = time.monotonic() + timeout
    hint_at = time.monotonic() + NO_WORKER_HINT_S
    job = app.get(job_id)
    while job.status.value not in TERMINAL:
        if hint_at and time.monotonic() > hint_at:
            hint_at = 0.0
            if job.status.value == "queued" and not _live_workers(app):
                click.echo(f"waiting for job {job_id}: no live worker serves the queue; start one with "
                           "`conveyor worker` (same CONVEYOR_DB_URL and CONVEYOR_QUEUE_URL) in another shell",
                           err=True)
        if time.monotonic() > deadline:
            _fail(f"job {job_id} is still {job.status.value} after {timeout:g}s; is a worker running "
                  "(`conveyor worker`)?")
        time.sleep(0.2)
        job = app.get(job_id)
    if job.status.value != "succeeded":
        _fail(f"job {job_id} {job.status.value}: {job.error_code}: {job.last_error}")
    result = job.result
    if as_json:
        click.echo(json.dumps(result | {"job_id": job_id}, indent=2))
        return
    console = _console()
    if result["tests"]:
        console.print(verdict_table(result))
    if result["verdict"] == "compile_error":
        # compiler output quotes the submission: its escape sequences must not reach the terminal
        console.print(printable(result["compile"]["message"]), markup=False, highlight=False)
        console.print(printable(result["compile"]["output"], multiline=True), markup=False, highlight=False)
    click.echo(f"verdict: {result['verdict']}  job {job_id}")


@judge.command("languages")
@click.option("--json", "as_json", is_flag=True)
def languages(as_json: bool) -> None:
    """List languages, their aliases and whether their toolchain is usable here."""
    from conveyor.plugin_api import get_plugins
    rows: list[dict[str, Any]] = []
    for lang in sorted(get_plugins().registry(LANGUAGES), key=lambda x: x.id):
        ok, why = lang.available()
        rows.append({"id": lang.id, "name": lang.name, "aliases": list(lang.aliases),
                     "extensions": list(lang.extensions), "available": ok, "detail": why if not ok else "",
                     "version": lang.version_text() if ok else "", "time_factor": lang.time_factor,
                     "memory_extra_mib": lang.memory_extra_mib})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = r["version"] if r["available"] else f"UNAVAILABLE: {r['detail']}"
        aliases = ",".join(r["aliases"]) or "-"
        click.echo(f"{r['id']:<11} {aliases:<22} {r['name']:<32} {state}")


@judge.command("self-test")
@click.option("--language", "-l", "langs", multiple=True, help="Only these language ids (repeatable).")
@click.option("--json", "as_json", is_flag=True)
def self_test_cmd(langs: tuple[str, ...], as_json: bool) -> None:
    """Compile and run A+B in every available language and check every verdict type."""
    from conveyor_judge.engine import Judge
    from conveyor_judge.selftest import self_test
    try:
        rows = self_test(Judge(), list(langs) or None)
    except Exception as exc:  # the sandbox itself may be unusable here
        _fail(f"self-test could not run: {type(exc).__name__}: {exc}")
        return
    if as_json:
        click.echo(json.dumps([{"language": r.language, "program": r.program, "expected": r.expected.value,
                                "got": r.got.value if r.got else None, "ok": r.ok, "skipped": r.skipped,
                                "seconds": round(r.time_s, 3),
                                "detail": r.detail} for r in rows], indent=2))
    else:
        for r in rows:
            got = r.got.short if r.got else "-"
            mark = "-- " if r.skipped else "ok " if r.ok else "!! "
            click.echo(f"{mark} {r.language:<11} {r.program:<22} expected {r.expected.short:<4}"
                       f"got {got:<4} {r.time_s:6.2f}s  {' '.join(r.detail.split())[:70]}")
        bad = [r for r in rows if not r.ok]
        skipped = sum(r.skipped for r in rows)
        click.echo(f"{len(rows) - len(bad) - skipped} ok, {len(bad)} not ok, {skipped} skipped (toolchain missing)")
    if any(not r.ok for r in rows):
        sys.exit(1)
