"""``conveyor demo``: real jobs through the real pipeline on this machine, with a summary."""

from __future__ import annotations

import statistics
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from conveyor.runner import Runner
from conveyor.store import JobSpec

if TYPE_CHECKING:
    from conveyor.app import Conveyor


def run_demo(app: Conveyor, n_jobs: int = 200, concurrency: int = 4, console: Console | None = None) -> bool:
    """Submit a mix of jobs, run them in-process, print progress and a table; True if all ended as expected."""
    console = console or Console(width=None if Console().is_terminal else 100)
    s = app.settings
    console.print(f"[bold]Conveyor demo[/] db={s.db_url} queue={s.queue_url} storage={s.storage_url}")
    specs = [JobSpec("conveyor.echo", {"n": i}) for i in range(n_jobs)]
    specs += [JobSpec("conveyor.sleep", {"seconds": 0.3}) for _ in range(4)]
    specs += [JobSpec("conveyor.fail", {"code": "timeout", "message": "a retryable failure"}, max_attempts=3),
              JobSpec("conveyor.fail", {"code": "invalid_payload", "message": "a permanent failure"}),
              JobSpec("conveyor.sleep", {"seconds": 60})]
    expected = {"conveyor.echo": "succeeded", "conveyor.sleep": "succeeded", "conveyor.fail": "failed"}
    t_submit = time.time()
    ids = app.submit_many(specs)
    long_sleep = ids[-1]
    runner = Runner(app, concurrency=concurrency)
    thread = threading.Thread(target=runner.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    total = len(ids)
    cancelled = False
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("jobs finished", total=total)
        deadline = time.time() + 120
        while time.time() < deadline:
            done = sum(1 for j in _statuses(app, ids).values() if j in ("succeeded", "failed", "cancelled"))
            progress.update(task, completed=done)
            if not cancelled and app.get(long_sleep).status.value == "running":
                app.cancel(long_sleep, reason="demo: cancel a running job")
                cancelled = True
            if done >= total:
                break
            time.sleep(0.1)
    rows: dict[str, dict[str, list[float] | int]] = defaultdict(lambda: {"n": 0, "succeeded": 0, "failed": 0,
                                                                          "cancelled": 0, "attempts": 0,
                                                                          "lat": []})
    ok = True
    for job_id in ids:
        job = app.get(job_id)
        r = rows[job.kind]
        r["n"] += 1  # type: ignore[operator]
        if job.status.value in ("succeeded", "failed", "cancelled"):
            r[job.status.value] += 1  # type: ignore[operator]
        r["attempts"] += job.attempts  # type: ignore[operator]
        if job.finished_at:
            r["lat"].append((job.finished_at - job.created_at).total_seconds() * 1000)  # type: ignore[union-attr]
        want = "cancelled" if job_id == long_sleep else expected.get(job.kind)
        if job.status.value != want:
            ok = False
    table = Table(title=f"{total} jobs in {time.time() - t_submit:.1f}s")
    for col in ("kind", "jobs", "succeeded", "failed", "cancelled", "attempts", "p50 ms", "p99 ms"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for kind, r in sorted(rows.items()):
        lat = sorted(r["lat"])  # type: ignore[arg-type]
        p50 = f"{statistics.median(lat):.0f}" if lat else "-"
        p99 = f"{lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.0f}" if lat else "-"
        table.add_row(kind, str(r["n"]), str(r["succeeded"]), str(r["failed"]), str(r["cancelled"]),
                      str(r["attempts"]), p50, p99)
    console.print(table)
    fail_job = app.get(ids[n_jobs + 4])
    console.print(f"retryable failure: {fail_job.attempts} attempts, error_history codes "
                  f"{[e['code'] for e in fail_job.error_history]}")
    console.print(f"inspect one: conveyor jobs show {ids[0]}")
    def arguments(plugin: str) -> dict[str, Any]:
        console.rule(f"[bold]{plugin}")
        return {"app": app, "console": console}

    for plugin, result, error in app.plugins.each_plugin("conveyor_demo", arguments):
        if error is not None:  # one plugin's demo failing must not hide the others
            console.print(f"[red]demo of plugin {plugin} failed: {error}[/]")
            ok = False
        elif result is False:
            ok = False
    runner.stop()
    thread.join(timeout=10)
    console.print("[green]every job ended as expected[/]" if ok else "[red]some jobs did not end as expected[/]")
    return ok


def _statuses(app: Conveyor, ids: list[str]) -> dict[str, str]:
    from sqlalchemy import select

    from conveyor.schema import jobs
    out: dict[str, str] = {}
    with app.engine.connect() as conn:
        for i in range(0, len(ids), 500):
            for r in conn.execute(select(jobs.c.id, jobs.c.status).where(jobs.c.id.in_(ids[i:i + 500]))):
                out[r.id] = r.status
    return out
