"""The converter family's contract: its hook and its registry, declared by this plugin.

The CAD plugin adds the hook to every plugin manager (``conveyor_add_hookspecs``) and
declares the family (``conveyor_families``); any plugin may then add a converter (see
docs/cad.md, "Write a converter"), and conversions read them with ``host.registry(CONVERTERS)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.plugin_api import Family, PluginError, Registry, hookspec

if TYPE_CHECKING:
    from conveyor_cad.converter import Converter


class ConverterRegister(Registry["Converter"]):
    """The register ``conveyor_register_converters`` receives: converters keyed by ``id``."""

    def check(self, item: Any) -> None:
        """A converter has a non-empty ``id``, ``formats`` and ``convert(...)``."""
        missing = [a for a in ("formats", "convert") if not hasattr(item, a)]
        if not getattr(item, "id", None):
            missing.insert(0, "id")
        if missing:
            raise PluginError(f"converter {item!r} lacks {', '.join(missing)} "
                              "(subclass conveyor_cad.converter.Converter)")


CONVERTERS: Family[Converter] = Family("converters", "conveyor_register_converters", ConverterRegister,
                                       "conveyor_cad")


@hookspec
def conveyor_register_converters(registry: ConverterRegister) -> None:
    """Register CAD converters: ``registry.add(converter)`` keyed by converter id.

    :param registry: the converter register; duplicate ids are rejected, and so is an object
        without an ``id``, ``formats`` and ``convert``.
    :return: nothing; every implementation is called.
    """
