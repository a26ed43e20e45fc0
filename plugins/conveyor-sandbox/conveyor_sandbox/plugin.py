"""Entry point of the sandbox plugin: the C sandbox, the Python fallback, and their CLI."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from conveyor.plugin_api import ErrorCode, Family, hookimpl
from conveyor_sandbox.hookspecs import SANDBOXES

if TYPE_CHECKING:
    import click

    from conveyor_sandbox.hookspecs import SandboxRegister


@hookimpl
def conveyor_register_sandboxes(registry: SandboxRegister) -> None:
    """Register the C sandbox and the weaker Python fallback."""
    from conveyor_sandbox.fallback import PythonSandbox
    from conveyor_sandbox.native import CSandbox

    registry.add(CSandbox())
    registry.add(PythonSandbox())


@hookimpl
def conveyor_add_commands(cli: click.Group) -> None:
    """Add ``conveyor sandbox run|doctor``."""
    from conveyor_sandbox.cli import sandbox

    cli.add_command(sandbox)


@hookimpl
def conveyor_error_codes() -> Iterable[ErrorCode]:
    """``sandbox_error``; the detail of a failed run lives in ``RunResult.error_code``."""
    return (ErrorCode("sandbox_error", True, "The sandbox could not start or supervise the program (not the "
                      "program's fault).", "Run `conveyor sandbox doctor` on the worker host.",
                      source="conveyor_sandbox"),)


@hookimpl
def conveyor_add_hookspecs(pluginmanager: Any) -> None:
    """Declare ``conveyor_register_sandboxes`` (``conveyor_sandbox.hookspecs``)."""
    from conveyor_sandbox import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def conveyor_families() -> Iterable[Family[Any]]:
    """The ``sandboxes`` family."""
    from conveyor_sandbox.hookspecs import SANDBOXES

    return (SANDBOXES,)


@hookimpl
def conveyor_doctor(app: Any) -> list[dict[str, Any]]:
    """Which sandbox backend jobs will get here, and why (``conveyor sandbox doctor`` runs the attacks)."""
    from conveyor_sandbox.contract import SandboxUnavailable, choose_sandbox

    registry = app.plugins.registry(SANDBOXES)
    try:
        chosen = choose_sandbox(registry)
    except SandboxUnavailable as exc:
        return [{"check": "sandbox", "ok": False, "detail": str(exc),
                 "next_step": "run `conveyor sandbox doctor` on this host"}]
    rows = []
    for backend in registry:
        ok, why = backend.available()
        mark = " (chosen)" if backend is chosen else ""
        rows.append({"check": f"sandbox {backend.id}", "ok": ok or backend is not chosen,
                     "detail": f"{'available' if ok else 'unavailable'}{mark}: {why}", "next_step": None})
    return rows


#: the environment variables this plugin reads
ENVIRONMENT = ("CONVEYOR_SANDBOX_ATTACKS", "CONVEYOR_SANDBOX_CGROUPS", "CONVEYOR_SANDBOX_HELPER",
               "CONVEYOR_SANDBOX_LOCKDIR", "CONVEYOR_SANDBOX_SPARES", "CONVEYOR_SANDBOX_UID_BASE",
               "CONVEYOR_SANDBOX_UID_COUNT", "CONVEYOR_SANDBOX_WORKSPACES")


@hookimpl
def conveyor_environment() -> Iterable[str]:
    return ENVIRONMENT


@hookimpl
def conveyor_metrics(metrics: Any) -> None:
    """Declare this plugin's Prometheus families."""
    from conveyor_sandbox.metrics import families

    families(metrics)
