"""The plugin contract: every hook Conveyor calls, typed and documented here.

Plugins implement these with ``@conveyor.hookimpl`` and are found through the
``conveyor`` entry-point group (first-party plugins included), or named in
``CONVEYOR_PLUGINS``. A plugin may add hook specifications of its own with
``conveyor_add_hookspecs``.

Error policy at every hook boundary: an exception raised by one plugin's
implementation is caught, logged with the plugin's name and recorded in
``conveyor plugins``; the other plugins' results are still used.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    from fastapi import APIRouter

    from conveyor.app import Conveyor
    from conveyor.dashboard import UiPage
    from conveyor.errors import ErrorCode
    from conveyor.metrics import Metrics
    from conveyor.migrate import Migrations
    from conveyor.registry import Family, Registry

hookspec = pluggy.HookspecMarker("conveyor")
hookimpl = pluggy.HookimplMarker("conveyor")


@hookspec(historic=True)
def conveyor_add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
    """Add a plugin's own hook specifications (``pluginmanager.add_hookspecs(module)``).

    :param pluginmanager: the manager every plugin is registered with.
    :return: nothing; called for every plugin, historic (late plugins see it too).
    """


@hookspec
def conveyor_register_job_kinds(registry: Registry) -> None:
    """Register job kinds: ``registry.add(JobKind(name, handler, retry, timeout_s))``.

    :param registry: the job-kind registry; a duplicate name is rejected naming both plugins.
    :return: nothing; every implementation is called.
    """


@hookspec
def conveyor_families() -> Iterable[Family[Any]] | None:
    """Declare the registry families this plugin's hooks fill (``conveyor.registry.Family``).

    A plugin that defines a kind of item (converters, judges, sandboxes) declares its
    family here and the family's register hook with ``conveyor_add_hookspecs``; any plugin
    then adds items with that hook, and ``host.registry(family)`` collects them.

    :return: families; every implementation's are merged. A family name declared twice is
        reported as the second plugin's error, and the first declaration is kept.
    """


@hookspec
def conveyor_migrations() -> Iterable[Migrations] | None:
    """Name this plugin's own tables' schema history (``conveyor.migrate.Migrations``).

    ``conveyor db upgrade`` (and ``Conveyor.init_db``, ``conveyor tenants add``) applies it to
    every job database after the core's ``jobs`` history; ``conveyor db status`` and
    ``conveyor doctor`` report it. Its first revision should create only the tables a
    database lacks, so that it can take over tables made before the history existed.

    :return: histories; every implementation's are applied, in plugin order. A history
        whose name or version table another one has is reported as that plugin's error.
    """


@hookspec
def conveyor_error_codes() -> Iterable[ErrorCode] | None:
    """Contribute error catalog entries (``conveyor.errors.ErrorCode``).

    :return: an iterable of entries; every implementation's entries are merged, and
        a code redefined differently is reported as that plugin's error.
    """


@hookspec
def conveyor_environment() -> Iterable[str] | None:
    """Name the ``CONVEYOR_*`` environment variables this plugin reads, so they are not reported as unknown.

    :return: variable names; a name ending in ``*`` stands for every variable with that
        prefix. Every implementation's names are merged. A ``CONVEYOR_*`` variable no
        setting and no plugin names is reported with the closest known name
        (``conveyor.config.unknown_environment``).
    """


@hookspec
def conveyor_metrics(metrics: Metrics) -> None:
    """Declare this plugin's Prometheus families on the process's metrics, so ``/metrics`` lists them from the start.

    :param metrics: ``conveyor.metrics.Metrics``; declare with ``metrics.counter(name, doc, labels)``,
        ``gauge`` or ``histogram``, and fetch the same family the same way where it counts.
        Label names must be in ``conveyor.metrics.BOUNDED_LABELS``.
    :return: nothing; every implementation is called.
    """


@hookspec
def conveyor_gc_keys(job: dict[str, Any]) -> Iterable[str] | None:
    """Name the storage keys a finished job owns besides ``jobs/{job_id}/``, for ``conveyor gc --apply`` to delete.

    :param job: the job row being deleted (``id``, ``kind``, ``tenant_id``, ``payload``).
    :return: storage keys only this job uses (an input shared with other jobs is not one), or None.
        Every implementation's keys are deleted; one that cannot be is logged and skipped.
    """


@hookspec
def conveyor_diagnose(job: dict[str, Any], context: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Add findings to ``conveyor diagnose JOB``.

    :param job: the job row as plain JSON.
    :param context: what the core gathered: ``events``, ``outbox``, ``queue_held``,
        ``settings`` (masked) and ``app`` (the ``Conveyor``, for database and storage).
    :return: a list of findings ``{"check", "ok", "detail", "next_step"}`` or None;
        every implementation's findings are shown.
    """


@hookspec
def conveyor_on_event(event: dict[str, Any]) -> None:
    """Observe a job event after it is committed (metrics, webhooks, audit).

    :param event: ``{"job_id", "attempt_id", "action", "payload", "file_id", "created_at"}``;
        ``created_at`` is an ISO-8601 UTC string. Called in the process that wrote the event.
    :return: nothing; an observer's exception is logged and never fails the job.
    """


@hookspec
def conveyor_add_commands(cli: click.Group) -> None:
    """Add click commands of a plugin to the ``conveyor`` launcher.

    :param cli: the root ``conveyor`` group; call ``cli.add_command(...)``.
    :return: nothing; every implementation is called.
    """


@hookspec
def conveyor_doctor(app: Conveyor) -> list[dict[str, Any]] | None:
    """Add checks to ``conveyor doctor`` (toolchains, sandbox capabilities, services).

    :param app: the deployment being checked.
    :return: findings ``{"check", "ok", "detail", "next_step"}`` or None; every
        implementation's findings are shown and a failed one makes doctor exit 1.
    """


@hookspec
def conveyor_demo(app: Conveyor, console: Any) -> bool | None:
    """Add a part to ``conveyor demo``: submit jobs, wait for them, print what they made.

    A dispatcher and a worker run in the background while the hook is called.

    :param app: the demo deployment (embedded default unless configured otherwise).
    :param console: a ``rich.console.Console`` to print progress and tables on.
    :return: False if something did not end as expected, else None or True; every
        implementation is called, in plugin registration order.
    """


@hookspec(firstresult=True)
def conveyor_object_tenant(app: Conveyor, url: str) -> str | None:
    """Name the tenant a stored object belongs to, when this plugin keeps a record of it.

    Lets one plugin accept another's stored objects as input without reading its tables:
    the judge takes a file uploaded through the CAD plugin's ``/files`` as a submission's
    source when the CAD plugin says it is the caller tenant's.

    :param app: the deployment whose database holds the records.
    :param url: the object's storage URL (``Storage.url(key)``).
    :return: the owning tenant, or None when this plugin has no record of the object; the
        first non-None answer wins.
    """


@hookspec(firstresult=True)
def conveyor_authenticate(request: Any) -> dict[str, Any] | None:
    """Identify the caller of the HTTP API before any bearer JWT is looked at.

    Called for every authenticated request of ``conveyor api`` (in a worker thread, so
    blocking I/O is fine), the plugin registered last first. A host application uses it
    to accept its own sessions or API keys.

    :param request: the ``starlette.requests.Request`` being served.
    :return: an identity ``{"sub", "tenant", "org", "roles", "tenants", "orgs"}`` (only
        ``sub`` is required; ``tenant`` defaults to ``"default"``; ``roles`` may hold
        ``"admin"``), or a ``conveyor.api.auth.Identity``; None to let the next plugin,
        then the JWT check, decide. The first non-None result wins; an implementation that
        raises is recorded against its plugin and skipped.
    """


@hookspec
def conveyor_ui_pages() -> Iterable[UiPage] | None:
    """Add pages to the web dashboard (``/ui/``), each a JavaScript module the plugin ships.

    :return: ``conveyor.dashboard.UiPage`` records (name, nav title, the module's path,
        order in the nav). Every implementation is called when the API starts; the files
        of each page's folder are served at ``/ui/plugin/NAME/``. A page whose name another
        page has, or whose script is missing, is left out and reported by name (log,
        ``conveyor plugins``); one plugin that raises loses its pages, the others keep theirs.
    """


@hookspec
def conveyor_api_routes(router: APIRouter, app: Conveyor) -> None:
    """Add a plugin's HTTP routes to ``conveyor api``.

    Each plugin gets a router of its own, mounted under ``/api/v1`` once the hook returns;
    core routes are matched first. Every route on it requires an authenticated caller;
    use ``Depends(conveyor.api.deps.current_scope)`` for the tenant and org to read and
    write in, and raise ``conveyor.api.errors.ApiError`` for the one error shape. Keep the
    routes in a module of their own that imports FastAPI at its top, and import that module
    inside the hook: workers without the ``api`` extra still load the plugin, and FastAPI
    can resolve the names the routes' annotations use.

    :param router: a ``fastapi.APIRouter`` to add routes to (``@router.get("/files")``).
    :param app: the ``Conveyor`` the API serves (database, queue, storage, plugins). With a
        database per tenant (``CONVEYOR_TENANCY``) it is the control one, whose database
        holds no jobs: a route reaches the request's tenant database through
        ``Depends(conveyor.api.deps.current_app)``.
    :return: nothing; every implementation is called. One that raises is reported by
        name (log, ``conveyor plugins``, ``GET /api/v1/health``) and none of its routes
        are mounted; the other plugins' routes are.
    """
