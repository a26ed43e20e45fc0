"""The CAD part of ``conveyor demo``: convert the shipped bracket (STEP and STL), print where the outputs are."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from conveyor_cad.files import add_file, file_json, get_file
from conveyor_cad.samples import sample_path

if TYPE_CHECKING:
    from conveyor.plugin_api import Conveyor


def run(app: Conveyor, console: Any, timeout: float = 180.0) -> bool:
    """Add the samples, wait for their conversions, print a table; False if one did not end ``done``."""
    from rich.table import Table

    added = [add_file(app, sample_path(name), name) for name in ("bracket.step", "bracket.stl")]
    ids = [a.job_id for a in added if a.job_id]
    if len(ids) != len(added):
        console.print("[red]no converter accepts the samples: is the cad extra installed?[/]")
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(app.get(j).status.value in ("succeeded", "failed", "cancelled") for j in ids):
            break
        time.sleep(0.2)
    table = Table(title="CAD conversions")
    for col in ("file", "status", "faces", "bbox (source units)", "seconds"):
        table.add_column(col)
    ok = True
    rows = []
    for a in added:
        rec = get_file(app.engine, a.file.id)
        assert rec is not None
        job = app.get(a.job_id or "")
        attrs = rec.attributes or {}
        size = (attrs.get("bbox") or {}).get("size")
        secs = (job.finished_at - job.created_at).total_seconds() if job.finished_at else None
        table.add_row(rec.filename, rec.conversion_status or "-", str(attrs.get("faces", "-")),
                      " x ".join(f"{v:.1f}" for v in size) + f" {attrs.get('units') or ''}" if size else "-",
                      f"{secs:.2f}" if secs is not None else "-")
        if rec.conversion_status != "done":
            ok = False
        rows.append((rec, file_json(app, rec)))
    console.print(table)
    for rec, d in rows:
        console.print(f"{rec.filename}: preview  {d['preview_url'] or '-'}", soft_wrap=True)
        console.print(f"{rec.filename}: geometry {d['geometry_url'] or '-'}", soft_wrap=True)
        if rec.conversion_error:
            console.print(f"[red]{rec.filename}: {rec.conversion_error}[/]")
    console.print(f"inspect one: conveyor files show {rows[0][0].id}")
    return ok
