"""The ``conveyor`` launcher: the reference way to run and inspect a deployment."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import timedelta
from typing import Any, NoReturn

import click

from conveyor import __version__
from conveyor.config import Settings, load_settings
from conveyor.errors import (
    ConfigError,
    ConveyorError,
    IllegalTransition,
    InvalidJob,
    JobNotFound,
    RetryLater,
    Unreachable,
)
from conveyor.models import Job
from conveyor.text import printable

EXIT_USAGE = 2


def _die(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {printable(message)}", err=True)
    sys.exit(code)


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        try:
            obj["settings"] = load_settings()
        except ConfigError as exc:
            _die(str(exc), EXIT_USAGE)
        _check_environment(obj["settings"])
    return obj["settings"]  # type: ignore[no-any-return]


def _check_environment(settings: Settings) -> None:
    """Report ``CONVEYOR_*`` variables nothing reads: a warning each, or an error with CONVEYOR_STRICT_CONFIG=1."""
    from conveyor.config import strict_config, unknown_environment
    from conveyor.plugins import get_plugins
    known: list[str] = []
    for names in get_plugins(settings.plugins or None).call_each("conveyor_environment"):
        known += [str(n) for n in names]
    problems = unknown_environment(os.environ, known)
    if problems and strict_config(os.environ):
        _die(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
             + "; CONVEYOR_STRICT_CONFIG=1 makes this an error", EXIT_USAGE)
    for line in problems:
        click.echo(f"warning: {printable(line)}", err=True)


def _serve_metrics(app: Any) -> None:
    """Start /metrics when CONVEYOR_METRICS_PORT is set (worker, dispatcher, scheduler, run)."""
    if app.settings.metrics_port:
        from conveyor.metrics import enable
        enable(app.settings.metrics_port)


def _app(ctx: click.Context, need_db: bool = True) -> Any:
    from conveyor.app import Conveyor
    from conveyor.db import missing_tables
    from conveyor.migrate import behind, state
    obj = ctx.ensure_object(dict)
    if "app" not in obj:
        try:
            app = Conveyor(_settings(ctx))
            if need_db:
                missing = missing_tables(app.engine, control=app.settings.tenancy != "single", upgrades=False)
                if missing:
                    _die(f"the database at {app.settings.db_url} has no Conveyor tables ({', '.join(missing)}); "
                         "run `conveyor db init` first", EXIT_USAGE)
                control, histories = app.settings.tenancy != "single", app.plugins.migrations()
                late = behind(app.engine, control=control, plugins=histories)
                if late:  # it may still work (an index is missing); the operator decides when
                    state(app.engine, control=control, plugins=histories)  # SchemaTooNew if it is ahead
                    click.echo("warning: the database's schema is behind this release ("
                               + ", ".join(f"{h} at {cur}, head {head}" for h, cur, head in late)
                               + "); run `conveyor db upgrade`", err=True)
        except ConfigError as exc:
            _die(str(exc), EXIT_USAGE)
        except Exception as exc:
            if type(exc).__module__.startswith("sqlalchemy"):
                _die(f"cannot reach the database ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                     "check CONVEYOR_DB_URL")
            raise
        obj["app"] = app
    return obj["app"]


def deployment(ctx: click.Context, *, need_db: bool = True) -> Any:
    """The ``Conveyor`` this invocation works on, for plugin commands too (built once per invocation).

    A bad setting or an unreachable database ends the command with one line; so does, with
    ``need_db``, a database without Conveyor's tables (exit 2, "run `conveyor db init`").
    """
    return _app(ctx, need_db)


def _json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=False))


def _setup_logging(level: str, fmt: str = "text") -> None:
    from conveyor import logs
    try:
        logs.setup(level, fmt)
    except ConfigError as exc:
        _die(str(exc), EXIT_USAGE)


def _plugins_setting() -> str | None:
    """CONVEYOR_PLUGINS from the environment or the config file (None: environment only)."""
    try:
        return load_settings().plugins or None
    except ConfigError:
        return None


#: commands of the first-party plugin distributions, for the hint when one is missing (as fsspec names an extra)
FIRST_PARTY_COMMANDS = {"sandbox": "conveyor-sandbox", "judge": "conveyor-judge", "cad": "conveyor-cad",
                        "files": "conveyor-cad"}


class _Root(click.Group):
    """The root group: adds plugin commands lazily, maps framework errors to messages."""

    _plugins_added = False

    def _add_plugin_commands(self, ctx: click.Context) -> None:
        if self._plugins_added:
            return
        self._plugins_added = True
        try:
            from conveyor.plugins import get_plugins
            get_plugins(_plugins_setting()).call_each("conveyor_add_commands", cli=self)
        except Exception as exc:  # the launcher keeps working without plugin commands
            click.echo(f"warning: plugin commands unavailable: {exc}", err=True)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands(ctx)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None:
            self._add_plugin_commands(ctx)
            cmd = super().get_command(ctx, cmd_name)
        return cmd

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                            list[str]]:
        name = args[0] if args else ""
        if name in FIRST_PARTY_COMMANDS and self.get_command(ctx, name) is None:
            dist = FIRST_PARTY_COMMANDS[name]
            ctx.fail(f"No such command {name!r}: it comes with the {dist} distribution, which is not installed "
                     f"here (or failed to load: `conveyor plugins`); pip install 'conveyor-jobs[{dist.split('-')[1]}]'")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RetryLater as exc:
            _die(f"{exc}; retry after {exc.retry_after_s:.0f}s", 75)
        except InvalidJob as exc:
            _die(f"{exc.code}: {exc.message}", EXIT_USAGE)
        except (JobNotFound, IllegalTransition) as exc:
            _die(str(exc))
        except ConfigError as exc:
            _die(str(exc), EXIT_USAGE)
        except Unreachable as exc:
            _die(str(exc))
        except ConveyorError as exc:
            from conveyor.tenancy import InvalidTenant, UnknownTenant
            if isinstance(exc, InvalidTenant):
                _die(str(exc), EXIT_USAGE)
            if isinstance(exc, UnknownTenant):
                _die(str(exc))
            _die(f"{type(exc).__name__}: {exc}")


@click.group(cls=_Root)
@click.version_option(__version__, prog_name="conveyor")
@click.option("--log-level", default="WARNING", envvar="CONVEYOR_LOG_LEVEL", show_default=True,
              help="DEBUG, INFO, WARNING or ERROR (logs go to stderr).")
@click.option("--log-format", default="text", envvar="CONVEYOR_LOG_FORMAT", show_default=True,
              help="text, or json: one JSON object per line, state-change fields as members.")
@click.pass_context
def cli(ctx: click.Context, log_level: str, log_format: str) -> None:
    """Conveyor: durable background jobs whose work is done by plugins."""
    _setup_logging(log_level, log_format)
    ctx.ensure_object(dict)


# ---------------------------------------------------------------- db

@cli.group()
def db() -> None:
    """The job database."""


def _schema_line(applied: list[str], app: Any, control: bool) -> str:
    from conveyor.migrate import state
    if applied:
        return "applied " + ", ".join(applied)
    at = ", ".join(f"{st.history} {st.current}" for st in state(app.engine, control=control,
                                                                 plugins=app.plugins.migrations()))
    return f"schema up to date ({at})"


def _upgrade(ctx: click.Context, as_json: bool) -> None:
    from conveyor.errors import SchemaTooNew
    app = _app(ctx, need_db=False)
    try:
        applied = app.init_db()
    except SchemaTooNew as exc:
        _die(str(exc))
    control = app.tenancy is not None
    report: dict[str, Any] = {"database": {"applied": applied}, "tenants": []}
    line = _schema_line(applied, app, control)
    if app.tenancy is None:
        if as_json:
            _json(report)
        else:
            click.echo(line)
        return
    if not as_json:
        click.echo("control database: " + line)
    failed = 0
    for r in app.tenancy.init_all():
        report["tenants"].append(r)
        name = r["tenant"] + (f"/{r['org']}" if r["org"] else "")
        if r["error"]:
            failed += 1
            if not as_json:
                click.echo(printable(f"tenant {name}: FAILED: {r['error']}"))
        elif not as_json:
            click.echo(printable(f"tenant {name}: " + ("applied " + ", ".join(r["applied"]) if r["applied"]
                                                      else "schema up to date")))
    if as_json:
        _json(report)
    if failed:
        _die(f"{failed} tenant database(s) could not be upgraded; `conveyor tenants add` creates a missing one")


@db.command("upgrade")
@click.option("--json", "as_json", is_flag=True, help="Print the revisions applied as JSON.")
@click.pass_context
def db_upgrade(ctx: click.Context, as_json: bool) -> None:
    """Bring the database to this release's schema (safe to run again); with a database per tenant, every
    registered one too."""
    _upgrade(ctx, as_json)


@db.command("init")
@click.option("--json", "as_json", is_flag=True, help="Print the revisions applied as JSON.")
@click.pass_context
def db_init(ctx: click.Context, as_json: bool) -> None:
    """Create the tables: the first `conveyor db upgrade`, and the same command after it."""
    _upgrade(ctx, as_json)


@db.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def db_status(ctx: click.Context, as_json: bool) -> None:
    """Each schema history's revision, this release's head and what `conveyor db upgrade` would apply;
    exit 1 when an upgrade is due."""
    from conveyor.errors import SchemaTooNew
    from conveyor.migrate import state
    app = _app(ctx, need_db=False)
    try:
        states = state(app.engine, control=app.tenancy is not None, plugins=app.plugins.migrations())
    except SchemaTooNew as exc:
        _die(str(exc))
    if as_json:
        _json([{"history": st.history, "current": st.current, "head": st.head,
                "pending": [{"revision": r.revision, "title": r.title} for r in st.pending]} for st in states])
    else:
        for st in states:
            click.echo(f"{st.history}: at {st.current or 'nothing (no Conveyor schema yet)'}, head {st.head}"
                       + ("" if st.up_to_date else "; `conveyor db upgrade` applies "
                          + ", ".join(f"{r.revision} ({r.title})" for r in st.pending)))
    if any(not st.up_to_date for st in states):
        raise SystemExit(1)


# ---------------------------------------------------------------- tenants

def _tenancy(ctx: click.Context) -> Any:
    app = _app(ctx)
    if app.tenancy is None:
        _die("CONVEYOR_TENANCY is single: every tenant shares the one database; set it to db-per-tenant or "
             "db-per-tenant-org (with CONVEYOR_DB_URL_TEMPLATE) to give tenants databases", EXIT_USAGE)
    return app.tenancy


@cli.group()
def tenants() -> None:
    """Tenant databases (CONVEYOR_TENANCY db-per-tenant or db-per-tenant-org)."""


@tenants.command("add")
@click.argument("tenant")
@click.option("--org", help="The org (db-per-tenant-org: required; each org has its own database).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tenants_add(ctx: click.Context, tenant: str, org: str | None, as_json: bool) -> None:
    """Create (if missing), migrate and register the database of TENANT (and --org); safe to run again."""
    t = _tenancy(ctx)
    if org and not t.per_org:
        _die(f"--org is for db-per-tenant-org; in {t.mode} a tenant's orgs share its database", EXIT_USAGE)
    r = t.add(tenant, org)
    if as_json:
        _json(r)
        return
    name = r["tenant"] + (f"/{r['org']}" if r["org"] else "")
    click.echo(printable(f"tenant {name}: database {r['database']}"
                         + (" created" if r["database_created"] else " exists")
                         + (f", applied {', '.join(r['applied'])}" if r["applied"] else ", schema up to date")
                         + (", registered" if r["registered"] else ", already registered")))


@tenants.command("remove")
@click.argument("tenant")
@click.option("--org", help="The org (db-per-tenant-org).")
@click.option("--force", is_flag=True, help="Remove even while its database holds queued or running jobs.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tenants_remove(ctx: click.Context, tenant: str, org: str | None, force: bool, as_json: bool) -> None:
    """Unregister the database of TENANT (and --org): the API and the fleet stop serving it; its data stays."""
    from conveyor.tenancy import TenantError
    t = _tenancy(ctx)
    if org and not t.per_org:
        _die(f"--org is for db-per-tenant-org; in {t.mode} a tenant's orgs share its database", EXIT_USAGE)
    try:
        r = t.remove(tenant, org, force=force)
    except TenantError as exc:
        _die(str(exc), EXIT_USAGE)
    if as_json:
        _json(r)
        return
    name = r["tenant"] + (f"/{r['org']}" if r["org"] else "")
    click.echo(printable(f"tenant {name}: unregistered; its database {r['database']} is kept (drop it yourself "
                         "once it is backed up)"))


@tenants.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tenants_list(ctx: click.Context, as_json: bool) -> None:
    """The registered tenant databases."""
    rows = _tenancy(ctx).describe()
    if as_json:
        _json(rows)
        return
    for r in rows:
        name = r["tenant"] + (f"/{r['org']}" if r["org"] else "")
        click.echo(printable(f"{name:<40} {r['database']}"))


# ---------------------------------------------------------------- submit / jobs

def _parse_payload(raw: str | None, max_bytes: int) -> Any:
    from conveyor.limits import parse_payload
    if raw is None:
        return {}
    try:
        return parse_payload(raw, max_bytes)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                                 "quote it for your shell, e.g. --payload '{\"seconds\": 2}'",
                                 param_hint="--payload") from None


@cli.command()
@click.argument("kind")
@click.option("--payload", help="The job's payload as JSON.")
@click.option("--tenant", default="default", show_default=True)
@click.option("--org")
@click.option("--priority", type=int, default=0, show_default=True,
              help="Higher runs first; -1000000 to 1000000.")
@click.option("--idempotency-key", help="Same key in the same tenant returns the existing job.")
@click.option("--max-attempts", type=int, help="1 to 1000 (default: the kind's, else CONVEYOR_MAX_ATTEMPTS).")
@click.option("--delay", type=float, help="Seconds to wait before the job may run; 0 to 366 days.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@click.pass_context
def submit(ctx: click.Context, kind: str, payload: str | None, tenant: str, org: str | None, priority: int,
           idempotency_key: str | None, max_attempts: int | None, delay: float | None, as_json: bool) -> None:
    """Submit a job of KIND and print its id."""
    from conveyor.limits import check_delay, check_kind
    check_kind(kind)
    delay = check_delay(delay) if delay is not None else None
    data = _parse_payload(payload, _settings(ctx).max_payload_bytes)
    app = _app(ctx)
    if kind not in app.kinds:
        click.echo(f"warning: no loaded plugin registers {kind!r} here; a worker must have it "
                   f"(known: {', '.join(app.kinds.keys())})", err=True)
    run_at = None
    if delay:
        from conveyor.db import utcnow
        run_at = utcnow() + timedelta(seconds=delay)
    app = app.for_tenant(tenant, org)  # itself unless each tenant has a database
    job_id = app.submit(kind, data, tenant=tenant, org=org, priority=priority, idempotency_key=idempotency_key,
                        max_attempts=max_attempts, run_at=run_at)
    if as_json:
        _json(app.get(job_id).as_dict())
    else:
        click.echo(job_id)


@cli.group()
def jobs() -> None:
    """Inspect, cancel and retry jobs."""


def _tenant_option(f: Any) -> Any:
    f = click.option("--org", help="Only in this org (the job's database with db-per-tenant-org).")(f)
    return click.option("--tenant", help="Only in this tenant (the job's database with a database per tenant; "
                                         "required then).")(f)


def _scoped(ctx: click.Context, tenant: str | None, org: str | None) -> Any:
    """The Conveyor holding TENANT's (and ORG's) jobs; the one database in single mode."""
    app = _app(ctx)
    t = app.tenancy
    if t is None:
        return app
    if tenant is None or (t.per_org and org is None):
        _die(f"each {'org' if t.per_org else 'tenant'} has its own database ({t.mode}): pass --tenant"
             + (" and --org" if t.per_org else ""), EXIT_USAGE)
    return app.for_tenant(tenant, org)


def _get_scoped(app: Any, job_id: str, tenant: str | None, org: str | None) -> Job:
    job: Job = app.get(job_id, tenant)
    if org is not None and job.org_id != org:
        raise JobNotFound(f"no job {job_id!r} in org {org!r}")
    return job


def _job_line(j: Job) -> str:
    return f"{printable(j.id)}  {printable(j.kind):<20} {j.status.value:<10} attempt={j.attempt_id}/{j.max_attempts} " \
           f"{printable(j.error_code or '')}"


@jobs.command("show")
@click.argument("job_id")
@_tenant_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def jobs_show(ctx: click.Context, job_id: str, tenant: str | None, org: str | None, as_json: bool) -> None:
    """Show one job with its change log."""
    app = _scoped(ctx, tenant, org)
    job = _get_scoped(app, job_id, tenant, org)
    data = job.as_dict()
    data["events"] = app.events(job_id)
    if as_json:
        _json(data)
        return
    for k, v in data.items():
        if k in ("events", "error_history", "payload", "result"):
            continue
        if v is not None:
            click.echo(f"{k:>17}: {printable(v, multiline=k == 'last_error')}")
    for k in ("payload", "result"):
        click.echo(f"{k:>17}: {printable(json.dumps(data[k])[:2000])}")
    if data["error_history"]:
        click.echo("    error_history:")
        for e in data["error_history"]:
            click.echo(printable(f"      attempt {e.get('attempt')}: {e.get('code')}: {str(e.get('message'))[:200]}"))
    click.echo("           events:")
    for e in data["events"]:
        extra = " ".join(f"{k}={v}" for k, v in e["payload"].items())
        click.echo(printable(f"      {e['created_at']} attempt {e['attempt_id']} {e['action']} {extra}"))


@jobs.command("list")
@click.option("--status", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]))
@click.option("--kind")
@click.option("--file-id")
@_tenant_option
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def jobs_list(ctx: click.Context, status: str | None, kind: str | None, file_id: str | None, tenant: str | None,
              org: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first."""
    found = _scoped(ctx, tenant, org).list_jobs(status=status, kind=kind, file_id=file_id, tenant=tenant, org=org,
                                                limit=limit)
    if as_json:
        _json([j.as_dict() for j in found])
    else:
        for j in found:
            click.echo(_job_line(j))


@jobs.command("cancel")
@click.argument("job_id")
@click.option("--reason", default="")
@_tenant_option
@click.pass_context
def jobs_cancel(ctx: click.Context, job_id: str, reason: str, tenant: str | None, org: str | None) -> None:
    """Cancel a queued or running job (a running handler stops at its next heartbeat)."""
    app = _scoped(ctx, tenant, org)
    job = app.cancel(_get_scoped(app, job_id, tenant, org).id, tenant=tenant, reason=reason)
    click.echo(f"{printable(job.id)} cancelled")


@jobs.command("retry")
@click.argument("job_id")
@_tenant_option
@click.pass_context
def jobs_retry(ctx: click.Context, job_id: str, tenant: str | None, org: str | None) -> None:
    """Run a failed or cancelled job again, with a fresh attempt budget."""
    app = _scoped(ctx, tenant, org)
    job = app.retry(_get_scoped(app, job_id, tenant, org).id, tenant=tenant)
    click.echo(f"{printable(job.id)} queued again")


# ---------------------------------------------------------------- processes

@cli.command()
@click.option("--concurrency", "-c", type=click.IntRange(1, 1024), help="Slots (jobs at once).")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty and nothing runs.")
@click.option("--name", help="Consumer name (default hostname-pid).")
@click.option("--grace", type=float, default=30.0, show_default=True,
              help="Seconds running jobs may finish after SIGTERM before they are released.")
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None, burst: bool, name: str | None, grace: float) -> None:
    """Run jobs from the queue."""
    from conveyor.worker import Worker
    app = _app(ctx)
    _serve_metrics(app)
    w = Worker(app, concurrency=concurrency, name=name, burst=burst, shutdown_grace_s=grace)
    stats = w.run()
    click.echo(f"worker {w.name} done: {stats.succeeded} succeeded, {stats.failed} failed, "
               f"{stats.retried} retried, {stats.stale} stale, {stats.released} released", err=True)


@cli.command()
@click.option("--once", is_flag=True, help="Publish what is due now and exit.")
@click.pass_context
def dispatcher(ctx: click.Context, once: bool) -> None:
    """Publish outbox rows to the queue."""
    import signal

    from conveyor import presence
    from conveyor.outbox import Dispatcher, FleetDispatcher, run_fleet_until_empty, run_until_empty
    app = _app(ctx)
    s = app.settings
    _serve_metrics(app)
    if once and logging.getLogger().level >= logging.WARNING:
        # a refused round ends the run with one error line instead of a warning per round
        logging.getLogger("conveyor.dispatcher").setLevel(logging.ERROR)
    d: Dispatcher | FleetDispatcher
    if app.tenancy is not None:  # one dispatcher drains every registered tenant database
        d = FleetDispatcher(app, batch=s.dispatch_batch, maxlen=s.stream_maxlen,
                            backoff_cap_s=s.dispatch_backoff_max_seconds)
        if once:
            click.echo(f"published {run_fleet_until_empty(d, strict=True)}")
            return
    else:
        d = Dispatcher(app.store, app.queue, batch=s.dispatch_batch, maxlen=s.stream_maxlen,
                       backoff_cap_s=s.dispatch_backoff_max_seconds)
        if once:
            click.echo(f"published {run_until_empty(d, strict=True)}")
            return
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: d.stop())
    name = f"{s.consumer_name}-dispatcher"
    presence.register(app.engine, name, "dispatcher")
    try:
        d.run()
    finally:
        presence.stopped(app.engine, name)


@cli.command()
@click.option("--once", is_flag=True, help="Run one repair round (if leader) and print the report.")
@click.option("--interval", type=float, help="Seconds between rounds.")
@click.option("--gc-apply", is_flag=True, help="Let the GC loop delete (default: it only logs its plan).")
@click.pass_context
def scheduler(ctx: click.Context, once: bool, interval: float | None, gc_apply: bool) -> None:
    """Leader-elected repair (lost jobs) and GC loops."""
    import signal

    from conveyor.scheduler import Scheduler
    app = _app(ctx)
    _serve_metrics(app)
    sched = Scheduler(app, interval_s=interval, gc_apply=gc_apply)
    if once:
        _json(sched.run_once())
        if sched.token is not None:
            from conveyor import lease
            from conveyor.scheduler import LEADER_LEASE
            lease.release(app.engine, LEADER_LEASE, sched.name)
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sched.stop())
    sched.run()


@cli.command()
@click.option("--apply", "apply_", is_flag=True, help="Delete (default: print the plan only).")
@click.option("--retention-days", type=click.FloatRange(0), help="Keep finished jobs this long.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def gc(ctx: click.Context, apply_: bool, retention_days: float | None, as_json: bool) -> None:
    """Trim the queue and delete finished jobs past retention (dry run by default)."""
    from conveyor.scheduler import Scheduler
    plan = Scheduler(_app(ctx)).gc(apply=apply_, retention_days=retention_days)
    if as_json:
        _json(plan.as_dict())
        return
    verb = "deleted" if plan.applied else "would delete"
    click.echo(f"{verb}: {plan.jobs} finished jobs older than {plan.retention_days} days, {plan.events} events, "
               f"{plan.outbox_rows} outbox rows, artifacts under {plan.artifact_prefixes} job prefixes")
    if plan.sample_job_ids:
        click.echo(printable("e.g. " + ", ".join(plan.sample_job_ids[:5])))
    if plan.applied:
        click.echo(f"trimmed {plan.trimmed_entries} queue entries")
    else:
        click.echo("dry run: nothing was deleted; pass --apply to act")


@cli.command()
@click.option("--concurrency", "-c", type=click.IntRange(1, 1024))
@click.option("--burst", is_flag=True, help="Exit when no job is queued or running.")
@click.pass_context
def run(ctx: click.Context, concurrency: int | None, burst: bool) -> None:
    """Dispatcher + scheduler + worker in one process (the embedded setup)."""
    from conveyor.runner import Runner
    app = _app(ctx)
    _serve_metrics(app)
    stats = Runner(app, concurrency=concurrency, burst=burst).run()
    click.echo(f"done: {stats.succeeded} succeeded, {stats.failed} failed, {stats.retried} retried", err=True)


# ---------------------------------------------------------------- HTTP API

@cli.command("api")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=7910, show_default=True)
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Server processes; each builds its own app from the environment and conveyor.toml.")
@click.pass_context
def api_command(ctx: click.Context, host: str, port: int, workers: int) -> None:
    """Serve the HTTP API: jobs, event streams, health, metrics and plugin routes (needs the api extra)."""
    from conveyor.api import require_extra
    require_extra()
    import uvicorn

    from conveyor.api.app import create_app
    app = _app(ctx)
    log_level = str(ctx.find_root().params.get("log_level") or "WARNING").lower()
    uv_level = "info" if log_level in ("debug", "info") else log_level
    api_app = create_app(app)  # checks the key configuration before the server starts
    click.echo(f"conveyor api on http://{host}:{port}/api/v1 (docs at /docs, {workers} worker(s))", err=True)
    # open event streams would hold a shutdown forever: they get a few seconds to end
    if workers == 1:
        uvicorn.run(api_app, host=host, port=port, log_level=uv_level, timeout_graceful_shutdown=5)
    else:
        uvicorn.run("conveyor.api.app:from_environment", factory=True, host=host, port=port, workers=workers,
                    log_level=uv_level, timeout_graceful_shutdown=5)


@cli.command()
@click.option("--sub", "subject", required=True, help="The token's subject (a user or service name).")
@click.option("--tenant", default="default", show_default=True,
              help="The tenant it acts in; '*' with --admin reads every tenant.")
@click.option("--org", help="The org it acts in (default: every org of the tenant).")
@click.option("--admin", is_flag=True, help="Add the admin role.")
@click.option("--ttl", type=click.IntRange(1, 366 * 86400), default=3600, show_default=True,
              help="Seconds until it expires.")
@click.pass_context
def token(ctx: click.Context, subject: str, tenant: str, org: str | None, admin: bool, ttl: int) -> None:
    """Mint an HS256 token for the HTTP API with CONVEYOR_JWT_SECRET (for development)."""
    from conveyor.api import require_extra
    require_extra()
    from conveyor.api.auth import ALL_TENANTS, MIN_SECRET_BYTES, mint_token
    s = _settings(ctx)
    if not s.jwt_secret:
        _die("CONVEYOR_JWT_SECRET is not set; set it (the API needs the same value) to mint tokens", EXIT_USAGE)
    if len(s.jwt_secret.encode()) < MIN_SECRET_BYTES:
        _die(f"CONVEYOR_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes", EXIT_USAGE)
    if tenant == ALL_TENANTS and not admin:
        _die("--tenant '*' needs --admin", EXIT_USAGE)
    if s.jwt_public_key or s.jwt_jwks_file:
        click.echo("warning: a public key is configured, so the API refuses HS256 tokens like this one", err=True)
    click.echo(mint_token(s.jwt_secret, subject, tenant=tenant, org=org, roles=["admin"] if admin else [],
                          ttl_s=ttl, audience=s.jwt_audience or None, issuer=s.jwt_issuer or None))


# ---------------------------------------------------------------- introspection

@cli.command()
@click.option("--json", "as_json", is_flag=True)
def plugins(as_json: bool) -> None:
    """What is loaded, from which distribution, with which hooks; and what failed."""
    from conveyor.plugins import get_plugins
    host = get_plugins(_plugins_setting())
    host.load_all()
    infos = host.list()
    if as_json:
        _json([{**i.__dict__, "hooks": list(i.hooks)} for i in infos])
        return
    for i in infos:
        state = f"FAILED: {i.error}" if i.error else "ok"
        dist = f"{i.distribution} {i.version}" if i.distribution else "(CONVEYOR_PLUGINS)"
        click.echo(f"{i.name:<14} {dist:<28} {state}")
        if i.hooks:
            click.echo(f"{'':<14} hooks: {', '.join(h.replace('conveyor_', '') for h in i.hooks)}")
    kinds = host.registry("job_kinds")
    click.echo(f"job kinds: {', '.join(kinds.keys()) or '(none)'}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def errors(as_json: bool) -> None:
    """The error catalog: code, retryable, meaning, next step."""
    from conveyor.plugins import get_plugins
    cat = get_plugins(_plugins_setting()).catalog
    if as_json:
        _json([c.as_dict() for c in cat])
        return
    for c in cat:
        click.echo(f"{c.code}  ({'retryable' if c.retryable else 'not retryable'}; {c.source})")
        click.echo(f"    {c.meaning}")
        click.echo(f"    next: {c.next_step}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def config(ctx: click.Context, as_json: bool) -> None:
    """Effective settings and where each came from (secrets masked)."""
    values = _settings(ctx).masked()
    if as_json:
        _json({k: {"value": v, "source": src} for k, (v, src) in values.items()})
        return
    for k, (v, src) in values.items():
        click.echo(f"{k:<30} {printable(v):<40} {printable(src)}")


@cli.group()
def queue() -> None:
    """The queue."""


@queue.command("pressure")
@click.pass_context
def queue_pressure(ctx: click.Context) -> None:
    """One JSON line: length, pending, lag, oldest_age_ms, oldest_age_source, approx."""
    click.echo(json.dumps(_app(ctx).queue.pressure().as_dict()))


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def workers(ctx: click.Context, as_json: bool) -> None:
    """Workers, dispatchers and schedulers known to the database."""
    from conveyor.presence import list_workers
    rows = list_workers(_app(ctx).engine)
    if as_json:
        _json(rows)
        return
    for r in rows:
        click.echo(printable(f"{r['name']:<32} {r['role']:<10} {'alive' if r['alive'] else 'gone':<6} "
                             f"slots={r['slots']} in_flight={r['in_flight']} last_progress={r['last_progress_at']}"))


@cli.command()
@click.argument("job_id")
@_tenant_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def diagnose(ctx: click.Context, job_id: str, tenant: str | None, org: str | None, as_json: bool) -> None:
    """Gather everything about a job and name the likely cause and next step."""
    from conveyor.diagnostics import diagnose as run_diagnose
    report = run_diagnose(_scoped(ctx, tenant, org), job_id, tenant, org)
    if as_json:
        _json(report)
        return
    click.echo(printable(f"job {job_id}: {report['status']}"))
    for f in report["findings"]:
        mark = "ok " if f["ok"] else "!! "
        step = f" (next: {f['next_step']})" if not f["ok"] and f.get("next_step") else ""
        click.echo(printable(f"  {mark}{f['check']}: {f['detail']}{step}"))
    click.echo(printable(f"cause: [{report['cause_code']}] {report['cause']}", multiline=True))
    for e in report["evidence"]:
        click.echo(printable(f"  because: {e}"))
    click.echo(printable(f"next:  {report['next_step']}"))


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check a deployment: database, queue, storage, plugins."""
    from conveyor.diagnostics import doctor as run_doctor
    checks = run_doctor(_app(ctx, need_db=False))
    if as_json:
        _json(checks)
    else:
        for c in checks:
            step = f"; next: {c['next_step']}" if not c["ok"] and c.get("next_step") else ""
            click.echo(printable(f"{'ok ' if c['ok'] else '!! '}{c['check']:<18} {c['detail']}{step}"))
    if not all(c["ok"] for c in checks):
        sys.exit(1)


@cli.command()
@click.option("--jobs", "n_jobs", type=click.IntRange(1, 100000), default=200, show_default=True,
              help="How many echo jobs to push through.")
@click.option("--concurrency", "-c", type=click.IntRange(1, 64), default=4, show_default=True)
@click.pass_context
def demo(ctx: click.Context, n_jobs: int, concurrency: int) -> None:
    """Push real jobs through dispatcher, queue and worker on this machine, then summarise."""
    from conveyor.demo import run_demo
    app = _app(ctx, need_db=False)
    app.init_db()
    ok = run_demo(app, n_jobs=n_jobs, concurrency=concurrency)
    sys.exit(0 if ok else 1)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="conveyor")


if __name__ == "__main__":
    main()
