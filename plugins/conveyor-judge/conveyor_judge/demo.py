"""The judge's part of ``conveyor demo``: three built-in submissions through the real pipeline."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from conveyor_judge.hookspecs import LANGUAGES
from conveyor_judge.problems import ProblemStore
from conveyor_judge.selftest import aplusb_package, program

if TYPE_CHECKING:
    from conveyor.plugin_api import Conveyor

#: (language, program, expected verdict), first available language of each row wins
CASES = ((("cpp", "c", "python3"), "aplusb", "accepted"), (("python3", "c"), "wa", "wrong_answer"),
         (("c", "cpp", "python3"), "tle", "time_limit_exceeded"))


def run_judge_demo(app: Conveyor, console: Any) -> bool:
    """Submit an accepted, a wrong and a too slow A+B; print the verdicts; False if one is not as expected."""
    from rich.table import Table

    from conveyor.plugin_api import get_plugins
    langs = {lang.id: lang for lang in get_plugins().registry(LANGUAGES)}
    info = ProblemStore(app.storage).add(aplusb_package("time_limit_ms = 500\nmemory_limit_mib = 64\n"))
    jobs = []
    for choices, name, want in CASES:
        lang = next((langs[c] for c in choices if c in langs and langs[c].available()[0]), None)
        if lang is None:
            console.print(f"[yellow]no toolchain for {name}: tried {', '.join(choices)}[/]")
            continue
        job_id = app.submit("judge.submission", {"problem_id": info.id, "language": lang.id,
                                                 "source": program(lang.id, name)})
        jobs.append((job_id, lang.id, name, want))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(
            app.get(j[0]).status.value not in ("succeeded", "failed", "cancelled") for j in jobs):
        time.sleep(0.2)
    table = Table(title=f"judge.submission on problem {info.id} (A+B, 3 tests)")
    for col in ("job", "language", "program", "verdict", "expected", "time ms", "memory KiB"):
        table.add_column(col)
    ok = bool(jobs)
    for job_id, lang_id, name, want in jobs:
        job = app.get(job_id)
        res = job.result if isinstance(job.result, dict) else {}
        got = res.get("verdict") or f"{job.status.value} {job.error_code or ''}".strip()
        ok = ok and got == want
        table.add_row(job_id[:8], lang_id, name, got, want, str(res.get("time_ms", "-")),
                      str(res.get("memory_kib", "-")))
    console.print(table)
    return ok
