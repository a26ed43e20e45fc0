"""Entry point of the CAD plugin (``conveyor`` entry point ``cad``): hooks only, heavy imports deferred."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from conveyor.plugin_api import ErrorCode, JobKind, RetryPolicy, hookimpl

if TYPE_CHECKING:
    import click

    from conveyor.plugin_api import Conveyor, Family, Migrations, Registry
    from conveyor_cad.hookspecs import ConverterRegister


@hookimpl
def conveyor_register_job_kinds(registry: Registry[JobKind]) -> None:
    """Register ``cad.convert``."""
    from conveyor_cad.job import convert_job

    registry.add(JobKind("cad.convert", convert_job, retry=RetryPolicy(), timeout_s=900.0, file_id_key="file_id",
                         description="convert a stored CAD file: preview, GLB, metadata", public_view=public_job_view))


def public_job_view(job: dict[str, Any]) -> dict[str, Any]:
    """A conversion job for callers without the admin role: its artifacts without their storage keys.

    The bytes are served by ``/file/{file_id}/preview`` and ``/geometry``; where they are stored is
    the operator's business, as ``preview_path`` and ``geometry_path`` are on ``/file/{file_id}``.
    """
    result = job.get("result")
    if isinstance(result, dict) and isinstance(result.get("manifest"), list):
        manifest = [{k: v for k, v in d.items() if k != "path"} if isinstance(d, dict) else d
                    for d in result["manifest"]]
        job = {**job, "result": {**result, "manifest": manifest}}
    return job


@hookimpl
def conveyor_register_converters(registry: ConverterRegister) -> None:
    """Register the first-party converters: mesh, brep, dxf, dwg and connector."""
    from conveyor_cad.brep import BrepConverter, DwgConverter
    from conveyor_cad.connector import ConnectorConverter
    from conveyor_cad.dxf import DxfConverter
    from conveyor_cad.mesh import MeshConverter

    for conv in (MeshConverter(), BrepConverter(), DxfConverter(), DwgConverter(), ConnectorConverter()):
        registry.add(conv)


@hookimpl
def conveyor_error_codes() -> Iterable[ErrorCode]:
    """The CAD codes: inputs, formats, conversions, connectors and references (``conveyor_cad.errors``)."""
    from conveyor_cad.errors import CODES

    return CODES


@hookimpl
def conveyor_object_tenant(app: Conveyor, url: str) -> str | None:
    """The tenant of the ``conveyor_files`` row whose object is at ``url``."""
    from conveyor_cad.files import file_tenant

    return file_tenant(app.engine, url)


@hookimpl
def conveyor_add_hookspecs(pluginmanager: Any) -> None:
    """Declare ``conveyor_register_converters`` (``conveyor_cad.hookspecs``)."""
    from conveyor_cad import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def conveyor_families() -> Iterable[Family[Any]]:
    """The ``converters`` family."""
    from conveyor_cad.hookspecs import CONVERTERS

    return (CONVERTERS,)


@hookimpl
def conveyor_migrations() -> Iterable[Migrations]:
    """The ``cad`` history: ``conveyor_files``."""
    from conveyor_cad.schema import MIGRATIONS

    return (MIGRATIONS,)


@hookimpl
def conveyor_add_commands(cli: click.Group) -> None:
    """Add ``conveyor cad convert|formats`` and ``conveyor files add|show``."""
    from conveyor_cad.cli import cad, files_group

    cli.add_command(cad)
    cli.add_command(files_group)


@hookimpl
def conveyor_api_routes(router: Any, app: Conveyor) -> None:
    """``POST /files``, ``GET /file/{id}`` and its ``/preview`` and ``/geometry`` under ``/api/v1``."""
    from conveyor_cad.api import add_routes

    add_routes(router, app)


@hookimpl
def conveyor_ui_pages() -> Iterable[Any]:
    """The dashboard's Files page: upload, conversion status, preview, a 3D view and metadata."""
    from pathlib import Path

    from conveyor.plugin_api import UiPage

    return [UiPage("files", "Files", Path(__file__).parent / "ui" / "files.js", order=10)]


@hookimpl
def conveyor_diagnose(job: dict[str, Any], context: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Findings for ``cad.convert`` jobs: input in storage (with latency), format, outputs, converter."""
    if job.get("kind") != "cad.convert":
        return None
    from conveyor_cad.diagnose import diagnose

    return diagnose(job, context)


@hookimpl
def conveyor_demo(app: Conveyor, console: Any) -> bool | None:
    """Convert the STEP bracket and STL that ship with the plugin; print where the outputs are."""
    from conveyor_cad.demo import run

    return run(app, console)


@hookimpl
def conveyor_doctor(app: Conveyor) -> list[dict[str, Any]] | None:
    """CAD libraries importable (with versions), routing valid, connector reachable when configured."""
    from conveyor_cad.diagnose import doctor

    return doctor(app)


#: the environment variables this plugin reads
ENVIRONMENT = ("CONVEYOR_CAD_TIME_LIMIT", "CONVEYOR_CAD_MEMORY_MB", "CONVEYOR_CAD_PREVIEW_SIZE",
               "CONVEYOR_CAD_OUTPUT_MB", "CONVEYOR_CAD_MAX_EXPANDED_ENTITIES", "CONVEYOR_CAD_CONNECTOR_URL",
               "CONVEYOR_CAD_CONNECTOR_TOKEN", "CONVEYOR_CAD_CONNECTOR_TIMEOUT", "CONVEYOR_CAD_CONNECTOR_UPLOAD",
               "CONVEYOR_CAD_ROUTING", "CONVEYOR_CAD_TENANT_ROUTING", "CONVEYOR_CAD_ISOLATION",
               "CONVEYOR_CAD_SANDBOX", "CONVEYOR_CAD_SANDBOX_PATHS")


@hookimpl
def conveyor_environment() -> Iterable[str]:
    return ENVIRONMENT


@hookimpl
def conveyor_metrics(metrics: Any) -> None:
    """Declare this plugin's Prometheus families."""
    from conveyor_cad.metrics import families

    families(metrics)
