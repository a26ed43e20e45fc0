"""The sandbox family's contract: its hook and its registry, declared by this plugin.

The sandbox plugin adds these to every plugin manager (``conveyor_add_hookspecs``) and
declares the family (``conveyor_families``); any plugin may then add a backend, and any
plugin reads them with ``host.registry(SANDBOXES)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.plugin_api import Family, PluginError, Registry, hookspec

if TYPE_CHECKING:
    from conveyor_sandbox.contract import Sandbox


class SandboxRegister(Registry["Sandbox"]):
    """The register ``conveyor_register_sandboxes`` receives: backends keyed by ``id``."""

    def check(self, item: Any) -> None:
        """A backend has a string ``id``, an int ``priority``, ``available()`` and ``run(...)``."""
        missing = [a for a in ("id", "priority", "available", "run") if not hasattr(item, a)]
        if missing:
            raise PluginError(f"sandbox backend {item!r} lacks {', '.join(missing)} "
                              "(see conveyor_sandbox.contract.Sandbox)")


SANDBOXES: Family[Sandbox] = Family("sandboxes", "conveyor_register_sandboxes", SandboxRegister, "conveyor_sandbox")


@hookspec
def conveyor_register_sandboxes(registry: SandboxRegister) -> None:
    """Register sandbox backends: ``registry.add(backend)`` keyed by backend id.

    :param registry: the sandbox register; duplicate ids are rejected, and so is an object
        without the ``conveyor_sandbox.contract.Sandbox`` members.
    :return: nothing; every implementation is called.
    """
