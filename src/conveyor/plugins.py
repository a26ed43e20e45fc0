"""Plugin loading: entry points and ``CONVEYOR_PLUGINS``, one failure never hides the rest."""

from __future__ import annotations

import importlib
import logging
import os
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from conveyor import hookspecs
from conveyor.errors import CATALOG, Catalog, ErrorCode, PluginError
from conveyor.registry import Registry

log = logging.getLogger("conveyor.plugins")

ENTRY_POINT_GROUP = "conveyor"

#: family name → hook that fills it
FAMILIES: dict[str, str] = {
    "job_kinds": "conveyor_register_job_kinds",
    "converters": "conveyor_register_converters",
    "judges": "conveyor_register_judges",
    "checkers": "conveyor_register_checkers",
    "sandboxes": "conveyor_register_sandboxes",
}


@dataclass(frozen=True)
class PluginInfo:
    """One plugin as `conveyor plugins` shows it."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    error: str | None = None


@dataclass
class PluginHost:
    """The loaded plugins, their registries and the errors met on the way."""

    pm: pluggy.PluginManager
    infos: dict[str, PluginInfo] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    _registries: dict[str, Registry[Any]] = field(default_factory=dict)
    _catalog: Catalog | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def registry(self, family: str) -> Registry[Any]:
        """The registry of one family (``job_kinds``, ``converters``, …), built on first use."""
        with self._lock:
            reg = self._registries.get(family)
            if reg is None:
                reg = Registry(family.rstrip("s").replace("_", " "))
                self._fill(FAMILIES[family], reg)
                self._registries[family] = reg
            return reg

    def _fill(self, hook_name: str, reg: Registry[Any]) -> None:
        caller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():  # registration order: first-party first
            reg.current_plugin = impl.plugin_name
            try:
                impl.function(registry=reg)
            except Exception as exc:  # one broken plugin must not hide the others
                self._record(impl.plugin_name, f"{hook_name}: {type(exc).__name__}: {exc}")
        reg.current_plugin = "<unknown>"

    def _record(self, plugin: str, message: str) -> None:
        log.error("plugin %s failed: %s", plugin, message)
        prev = self.errors.get(plugin)
        self.errors[plugin] = f"{prev}; {message}" if prev else message

    @property
    def catalog(self) -> Catalog:
        """The error catalog: core codes plus every plugin's ``conveyor_error_codes``."""
        with self._lock:
            if self._catalog is None:
                cat = Catalog(list(CATALOG))
                for impl in self.pm.hook.conveyor_error_codes.get_hookimpls():
                    try:
                        contributed: Any = impl.function() or ()
                        for code in contributed:
                            if not isinstance(code, ErrorCode):
                                raise PluginError(f"{code!r} is not an ErrorCode")
                            cat.add(code)
                            CATALOG.add(code)
                    except Exception as exc:
                        self._record(impl.plugin_name, f"conveyor_error_codes: {exc}")
                self._catalog = cat
            return self._catalog

    def call_each(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call every implementation of a hook, isolating failures; returns non-None results."""
        results = []
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            try:
                res = impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as exc:
                self._record(impl.plugin_name, f"{hook_name}: {type(exc).__name__}: {exc}")
                continue
            if res is not None:
                results.append(res)
        return results

    def first_result(self, hook_name: str, **kwargs: Any) -> Any:
        """Call implementations in pluggy's order (last registered first) until one returns non-None.

        A failing implementation is recorded and skipped, as ``call_each`` does.
        """
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            try:
                res = impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as exc:
                self._record(impl.plugin_name, f"{hook_name}: {type(exc).__name__}: {exc}")
                continue
            if res is not None:
                return res
        return None

    def record(self, plugin: str, message: str) -> None:
        """Report a plugin's failure met outside the host (logged, shown by ``conveyor plugins``)."""
        self._record(plugin, message)

    def emit(self, event: dict[str, Any]) -> None:
        """Send a committed event to every ``conveyor_on_event`` observer."""
        if self.pm.hook.conveyor_on_event.get_hookimpls():
            self.call_each("conveyor_on_event", event=event)

    def list(self) -> list[PluginInfo]:
        """Every plugin seen, loaded or failed, sorted by name."""
        out = dict(self.infos)
        for name, err in self.errors.items():
            info = out.get(name)
            if info is None:
                out[name] = PluginInfo(name, "?", None, None, (), err)
            elif info.error != err:
                out[name] = PluginInfo(info.name, info.module, info.distribution, info.version, info.hooks, err)
        return [out[k] for k in sorted(out)]


FIRST_PARTY = "conveyor-jobs"


def _dist_name(ep: metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else None


def _hooks_of(obj: Any) -> tuple[str, ...]:
    return tuple(sorted(n for n in dir(obj) if n.startswith("conveyor_") and callable(getattr(obj, n, None))))


def load_plugins(extra: str | None = None, *, entry_points: bool = True,
                 register: Callable[[pluggy.PluginManager], object] | None = None) -> PluginHost:
    """Build a PluginHost from the ``conveyor`` entry points and ``extra`` module paths.

    ``extra`` is a comma-separated list of importable module names (``CONVEYOR_PLUGINS``).
    """
    pm = pluggy.PluginManager("conveyor")
    pm.add_hookspecs(hookspecs)
    host = PluginHost(pm)
    pm.hook.conveyor_add_hookspecs.call_historic(kwargs={"pluginmanager": pm})

    def add(name: str, obj: Any, dist: str | None, version: str | None) -> None:
        if pm.has_plugin(name) or pm.is_registered(obj):
            return
        try:
            pm.register(obj, name=name)
        except Exception as exc:
            host._record(name, f"register: {type(exc).__name__}: {exc}")
            return
        host.infos[name] = PluginInfo(name, getattr(obj, "__name__", repr(obj)), dist, version, _hooks_of(obj))

    if entry_points:
        # first-party plugins register first, so a third party cannot shadow a built-in id
        eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP),
                     key=lambda e: (_dist_name(e) != FIRST_PARTY, e.name))
        for ep in eps:
            dist = getattr(ep, "dist", None)
            dname = dist.metadata["Name"] if dist is not None else None
            dver = dist.version if dist is not None else None
            try:
                obj = ep.load()
            except Exception as exc:
                host._record(ep.name, f"import {ep.value}: {type(exc).__name__}: {exc}")
                host.infos[ep.name] = PluginInfo(ep.name, ep.value, dname, dver, (), host.errors[ep.name])
                log.debug("%s", traceback.format_exc())
                continue
            add(ep.name, obj, dname, dver)
    for modname in [m.strip() for m in (extra or "").split(",") if m.strip()]:
        try:
            obj = importlib.import_module(modname)
        except Exception as exc:
            host._record(modname, f"import {modname}: {type(exc).__name__}: {exc}")
            continue
        add(modname, obj, None, None)
    if register is not None:
        register(pm)
    return host


_HOSTS: dict[str, PluginHost] = {}
_HOSTS_LOCK = threading.Lock()


def get_plugins(extra: str | None = None) -> PluginHost:
    """The process-wide PluginHost for entry points + ``extra`` (default ``CONVEYOR_PLUGINS``), loaded once."""
    if extra is None:
        extra = os.environ.get("CONVEYOR_PLUGINS", "")
    with _HOSTS_LOCK:
        host = _HOSTS.get(extra)
        if host is None:
            host = _HOSTS[extra] = load_plugins(extra)
        return host


def reset_plugins() -> None:
    """Forget the process-wide PluginHosts (tests, reloads)."""
    with _HOSTS_LOCK:
        _HOSTS.clear()
