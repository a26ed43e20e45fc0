"""Entry point ``gts`` of the ``conveyor`` group: registers one converter."""

from __future__ import annotations

from typing import Any

from conveyor.plugin_api import hookimpl


@hookimpl
def conveyor_register_converters(registry: Any) -> None:
    """Add the GTS converter to the CAD converter registry."""
    from conveyor_cad_gts.converter import GtsConverter

    registry.add(GtsConverter())
