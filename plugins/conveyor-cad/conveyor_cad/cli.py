"""``conveyor cad convert|formats`` and ``conveyor files add|show``."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from conveyor.plugin_api import printable
from conveyor_cad.files import add_file, file_json, get_file
from conveyor_cad.hookspecs import CONVERTERS

FINAL = ("succeeded", "failed", "cancelled")


def _app(ctx: click.Context) -> Any:
    from conveyor.plugin_api import ConfigError, deployment

    app = deployment(ctx, need_db=False)
    try:
        app.init_db()  # `conveyor cad convert` works in a fresh directory
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return app


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _check_path(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise click.ClickException(f"{path}: no such file; give the path of a CAD file to store")
    return p


def _print_file(app: Any, d: dict[str, Any]) -> None:
    click.echo(f"file {d['id']}  {printable(d['filename'])}  {d['size']} bytes  format={d['cad_format'] or '?'}  "
               f"status={d['conversion_status'] or '-'}")
    click.echo(f"  source:   {printable(d['system_path'])}")
    if d.get("preview_url"):
        click.echo(f"  preview:  {d['preview_url']}")
    if d.get("geometry_url"):
        click.echo(f"  geometry: {d['geometry_url']}")
    err = d.get("conversion_error")
    if err:
        # converter messages may carry a library's ANSI colours or a hostile file's bytes
        click.echo(f"  error:    {err.get('code')} at {err.get('stage')} ({err.get('converter')}): "
                   f"{printable(err.get('message'))}")


def _wait(app: Any, job_id: str, timeout: float) -> Any:
    """Wait for a job, running a worker here when no other worker takes it within a moment."""
    from conveyor.plugin_api import Runner

    runner = Runner(app, concurrency=1)
    thread = threading.Thread(target=runner.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = app.get(job_id)
            if job.status.value in FINAL:
                return job
            time.sleep(0.1)
        raise click.ClickException(f"job {job_id} did not finish within {timeout:g}s; "
                                   f"`conveyor diagnose {job_id}` tells why")
    finally:
        runner.stop()
        thread.join(timeout=30)


@click.group("cad")
def cad() -> None:
    """CAD conversion: convert a file, list formats and converters."""


@cad.command("convert")
@click.argument("path")
@click.option("--wait/--no-wait", default=False, help="Run the conversion here and wait for it.")
@click.option("--json", "as_json", is_flag=True, help="Print the file row as JSON (with preview_url/geometry_url).")
@click.option("--tenant", default="default", show_default=True)
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait with --wait.")
@click.pass_context
def cad_convert(ctx: click.Context, path: str, wait: bool, as_json: bool, tenant: str, timeout: float) -> None:
    """Store FILE, convert it, and print its outputs."""
    p = _check_path(path)
    app = _app(ctx)
    added = add_file(app, p, p.name, tenant=tenant)
    if added.job_id is None:
        d = file_json(app, added.file)
        _echo_json(d) if as_json else _print_file(app, d)
        sys.exit(2)
    job = None
    if wait:
        job = _wait(app, added.job_id, timeout)
    rec = get_file(app.engine, added.file.id)
    assert rec is not None
    d = file_json(app, rec)
    d["job_id"] = added.job_id
    if job is not None:
        d["job_status"] = job.status.value
        d["manifest"] = (job.result or {}).get("manifest") if isinstance(job.result, dict) else None
    if as_json:
        _echo_json(d)
    else:
        _print_file(app, d)
        click.echo(f"  job:      {added.job_id}" + (f" ({job.status.value})" if job else
                                                     " (queued: run `conveyor worker`, or use --wait)"))
        for m in d.get("manifest") or []:
            click.echo(f"    {m['role']:9} {m['status']:7} {m['path'] or '-'}  {m['size']} bytes")
    if job is not None and job.status.value != "succeeded":
        sys.exit(1)


@cad.command("formats")
@click.option("--json", "as_json", is_flag=True)
def cad_formats(as_json: bool) -> None:
    """List the formats Conveyor recognises and the converters that take each."""
    from conveyor.plugin_api import get_plugins
    from conveyor_cad.formats import FORMATS
    from conveyor_cad.routing import CadConfig, local_converter

    reg = get_plugins().registry(CONVERTERS)
    cfg = CadConfig.load()
    rows: list[dict[str, Any]] = []
    for f in FORMATS.values():
        conv = local_converter(reg, f.id)
        rows.append({"format": f.id, "name": f.name, "extensions": list(f.extensions), "mime": f.mime,
                     "converter": conv.id if conv else None, "supported": bool(conv and conv.supported),
                     "routing": cfg.policy(f.id).value})
    converters = [dict(c.describe(), plugin=reg.owner(c.id)) for c in reg]
    if as_json:
        _echo_json({"formats": rows, "converters": converters})
        return
    click.echo(f"{'format':6} {'extensions':22} {'converter':10} {'routing':21} state")
    for r in rows:
        state = "ok" if r["supported"] else ("recognised only" if r["converter"] else "no converter")
        click.echo(f"{r['format']:6} {', '.join(r['extensions']):22} {r['converter'] or '-':10} "
                   f"{r['routing']:21} {state}")
    click.echo("converters: " + ", ".join(f"{c['id']} {c['version']} ({c['plugin']})" for c in converters))


@click.group("files")
def files_group() -> None:
    """Stored input files."""


@files_group.command("add")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True)
@click.option("--tenant", default="default", show_default=True)
@click.option("--no-convert", is_flag=True, help="Store only; do not submit a conversion.")
@click.pass_context
def files_add(ctx: click.Context, path: str, as_json: bool, tenant: str, no_convert: bool) -> None:
    """Store PATH; submit its conversion when a converter accepts the format."""
    p = _check_path(path)
    app = _app(ctx)
    added = add_file(app, p, p.name, tenant=tenant, convert=not no_convert)
    d = file_json(app, added.file)
    d["job_id"] = added.job_id
    if as_json:
        _echo_json(d)
        return
    _print_file(app, d)
    click.echo(f"  job:      {added.job_id} (cad.convert via {added.converter})" if added.job_id else
               "  job:      none")


@files_group.command("show")
@click.argument("file_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--tenant", default=None)
@click.pass_context
def files_show(ctx: click.Context, file_id: str, as_json: bool, tenant: str | None) -> None:
    """Show a stored file: source, format, conversion status, outputs, attributes."""
    app = _app(ctx)
    rec = get_file(app.engine, file_id, tenant)
    if rec is None:
        raise click.ClickException(f"no file {file_id!r}; `conveyor files add PATH` prints the id")
    d = file_json(app, rec)
    latest = app.list_jobs(file_id=rec.id, kind="cad.convert", limit=1)
    d["job_id"] = latest[0].id if latest else None
    if as_json:
        _echo_json(d)
        return
    _print_file(app, d)
    if latest:
        click.echo(f"  job:      {latest[0].id} ({latest[0].status.value}, attempt {latest[0].attempt_id})")
    if rec.attributes:
        click.echo("  attributes: " + printable(json.dumps(rec.attributes, default=str)[:400]))
