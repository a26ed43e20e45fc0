"""Keyed registries handed to plugins: ``registry.add(item)``, duplicates rejected.

A *family* (``Family``) names one kind of plugin-provided item: its registry, the hook
that fills it and the register type that hook receives. The core declares one family,
``job_kinds``; plugins declare theirs (converters, judges, sandboxes, …) with the
``conveyor_families`` hook, and the hook's specification with ``conveyor_add_hookspecs``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from conveyor.errors import PluginError

T = TypeVar("T")

#: the plugin whose hook implementation is running (set by the plugin host around each call)
calling_plugin: ContextVar[str] = ContextVar("calling_plugin", default="<unknown>")


def _default_key(item: Any) -> str:
    for attr in ("id", "name", "code"):
        value = getattr(item, attr, None)
        if isinstance(value, str) and value:
            return value
    raise PluginError(f"cannot register {item!r}: it has no 'id' or 'name' attribute")


class Registry(Generic[T]):
    """A family of plugin-provided items keyed by id, remembering who added each."""

    def __init__(self, family: str, key: Callable[[T], str] = _default_key) -> None:
        self.family = family
        self._key = key
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}
        #: who adds items now; None: the plugin whose hook is running (``calling_plugin``)
        self.current_plugin: str | None = None

    def check(self, item: T) -> None:
        """Refuse an item this family cannot use: raise PluginError naming what is wrong (register types do)."""

    def add(self, item: T) -> T:
        """Register one item; a second item with the same id is a PluginError."""
        self.check(item)
        key = self._key(item)
        who = self.current_plugin or calling_plugin.get()
        if key in self._items:
            raise PluginError(
                f"{self.family} {key!r} from plugin {who!r} is already registered by "
                f"plugin {self._owners[key]!r}; rename one of them or uninstall one plugin"
            )
        self._items[key] = item
        self._owners[key] = who
        return item

    def get(self, key: str) -> T | None:
        """The item with this id, or None."""
        return self._items.get(key)

    def owner(self, key: str) -> str | None:
        """Name of the plugin that registered this id."""
        return self._owners.get(key)

    def __getitem__(self, key: str) -> T:
        return self._items[key]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[str]:
        """Registered ids, sorted."""
        return sorted(self._items)


@dataclass(frozen=True)
class Family(Generic[T]):
    """One kind of plugin-provided item: the registry's name, the hook that fills it, the register type it gets."""

    #: the registry's name (``host.registry(name)``, ``conveyor plugins``): plural, ``converters``
    name: str
    #: the hook every plugin implements to add items: ``conveyor_register_converters(registry)``
    hook: str
    #: the register object the hook receives (a ``Registry`` subclass may check items in ``check``)
    register: type[Registry[T]] = Registry
    #: who declares the family ("conveyor" for the core's own)
    source: str = "conveyor"

    def new_registry(self) -> Registry[T]:
        """An empty register of this family."""
        return self.register(self.name.rstrip("s").replace("_", " "))
