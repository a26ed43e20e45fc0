"""Plugin loading: entry points and ``CONVEYOR_PLUGINS``, one failure never hides the rest.

Hooks are called through pluggy (``pm.hook.…``), so ``firstresult``, wrappers, historic
hooks and tracing work. The error policy lives at each implementation: when a plugin is
registered, each of its implementations is wrapped so that an exception (or a result
its hook's check refuses) is reported under the plugin's name and counts as no answer,
and the other plugins' implementations still run. (A pluggy hook wrapper cannot do this:
an exception in one implementation ends the whole call before the others run.)
First-party plugins' implementations run first, so a third party cannot claim a
built-in id in a registry.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, TypeVar, overload

import pluggy

from conveyor import hookspecs
from conveyor.errors import CORE_CODES, Catalog, ErrorCode, PluginError
from conveyor.migrate import Migrations
from conveyor.registry import Family, Registry, calling_plugin

log = logging.getLogger("conveyor.plugins")
T = TypeVar("T")

ENTRY_POINT_GROUP = "conveyor"

#: the core's one family; plugins declare theirs with ``conveyor_families``
JOB_KINDS: Family[Any] = Family("job_kinds", "conveyor_register_job_kinds")


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
    _families: dict[str, Family[Any]] | None = None
    _migrations: tuple[Migrations, ...] | None = None
    _catalog: Catalog | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _recorded: int = 0
    _last_error: dict[str, str] = field(default_factory=dict)

    def families(self) -> dict[str, Family[Any]]:
        """Every declared family by name: the core's ``job_kinds`` and each plugin's ``conveyor_families``."""
        with self._lock:
            return dict(self._declared())

    def _declared(self) -> dict[str, Family[Any]]:
        if self._families is None:
            found: dict[str, Family[Any]] = {JOB_KINDS.name: JOB_KINDS}
            for plugin, families, _error in self.each_plugin("conveyor_families", lambda _p: {}):
                for fam in families or ():
                    if not isinstance(fam, Family):
                        self._record(plugin, f"conveyor_families: {fam!r} is not a conveyor.registry.Family")
                    elif fam.name in found and found[fam.name] != fam:
                        self._record(plugin, f"conveyor_families: family {fam.name!r} is already declared by "
                                             f"{found[fam.name].source!r}; rename it")
                    else:
                        found[fam.name] = fam
            self._families = found
        return self._families

    def migrations(self) -> tuple[Migrations, ...]:
        """The plugins' schema histories (``conveyor_migrations``), each name and version table once."""
        with self._lock:
            if self._migrations is None:
                from conveyor.migrate import CORE
                taken = {m.name: "conveyor" for m in CORE.values()}
                tables = {m.version_table for m in CORE.values()}
                found: list[Migrations] = []
                for plugin, histories, _error in self.each_plugin("conveyor_migrations", lambda _p: {}):
                    for m in histories or ():
                        if not isinstance(m, Migrations):
                            self._record(plugin, f"conveyor_migrations: {m!r} is not a conveyor.migrate.Migrations")
                        elif m.name in taken or m.version_table in tables:
                            self._record(plugin, f"conveyor_migrations: history {m.name!r} ({m.version_table}) "
                                                 f"clashes with one already declared; rename it")
                        elif (problem := m.problem()) is not None:
                            self._record(plugin, f"conveyor_migrations: history {m.name!r}: {problem}")
                        else:
                            taken[m.name] = plugin
                            tables.add(m.version_table)
                            found.append(m)
                self._migrations = tuple(found)
            return self._migrations

    def load_all(self) -> None:
        """Fill every declared family and the error catalog, so each plugin's failures are on record."""
        for name in self.families():
            self.registry(name)
        self.migrations()
        _ = self.catalog

    @overload
    def registry(self, family: Family[T]) -> Registry[T]: ...

    @overload
    def registry(self, family: str) -> Registry[Any]: ...

    def registry(self, family: str | Family[Any]) -> Registry[Any]:
        """The registry of one family, filled by its hook on first use.

        ``family`` is a ``Family`` (typed: the plugin that declares it exports it) or a
        declared family's name; an unknown name is a PluginError naming the known ones.
        """
        with self._lock:
            if isinstance(family, str):
                declared = self._declared().get(family)
                if declared is None:
                    raise PluginError(f"no loaded plugin declares the registry family {family!r} (known: "
                                      f"{', '.join(sorted(self._declared()))}); install the plugin that defines "
                                      "it, and see `conveyor plugins` for plugins that failed to load")
                family = declared
            reg = self._registries.get(family.name)
            if reg is None:
                reg = family.new_registry()
                caller = getattr(self.pm.hook, family.hook, None)
                if caller is not None:  # no hook: the declaring plugin is not loaded, so nobody adds items
                    caller(registry=reg)  # first-party first; the owner of each item is calling_plugin
                self._registries[family.name] = reg
            return reg

    def _record(self, plugin: str, message: str) -> None:
        self._recorded += 1
        self._last_error[plugin] = message
        log.error("plugin %s failed: %s", plugin, message)
        prev = self.errors.get(plugin)
        self.errors[plugin] = f"{prev}; {message}" if prev else message

    @property
    def catalog(self) -> Catalog:
        """The error catalog: core codes plus every plugin's ``conveyor_error_codes``."""
        with self._lock:
            if self._catalog is None:
                # this host's own catalog: the core's codes and its plugins' (conveyor.errors.CATALOG stays the
                # core's, so two hosts in one process never see each other's codes)
                cat = Catalog(CORE_CODES)
                for plugin, codes, _error in self.each_plugin("conveyor_error_codes", lambda _p: {}):
                    for code in codes or ():  # each checked by _check_codes
                        try:
                            cat.add(code)
                        except ValueError as exc:
                            self._record(plugin, f"conveyor_error_codes: {exc}")
                self._catalog = cat
            return self._catalog

    def call_each(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call a hook through pluggy; the non-None results (a failing implementation is recorded, and skipped)."""
        return list(getattr(self.pm.hook, hook_name)(**kwargs))

    def first_result(self, hook_name: str, **kwargs: Any) -> Any:
        """Call a ``firstresult`` hook through pluggy: the first non-None answer (last registered first)."""
        return getattr(self.pm.hook, hook_name)(**kwargs)

    def each_plugin(self, hook_name: str, kwargs_for: Callable[[str], dict[str, Any]]
                    ) -> Iterator[tuple[str, Any, str | None]]:
        """Call a hook one plugin at a time, through pluggy and in its order: ``(plugin, result, error)``.

        For callers that treat each plugin's answer apart (its routes, its demo).
        ``kwargs_for(plugin)`` gives that plugin's arguments, just before its call; ``error`` is
        the failure the error policy recorded for the call, None when it succeeded.
        """
        answering = [i for i in reversed(getattr(self.pm.hook, hook_name).get_hookimpls())
                     if not (i.wrapper or i.hookwrapper)]
        for impl in answering:  # the wrappers wrap each call
            only = self.pm.subset_hook_caller(hook_name, remove_plugins=[i.plugin for i in answering
                                                                         if i.plugin is not impl.plugin])
            before = self._recorded
            results = only(**kwargs_for(impl.plugin_name))
            failed = self._recorded != before and impl.plugin_name in self._last_error
            yield (impl.plugin_name, results[0] if results else None,
                   self._last_error[impl.plugin_name] if failed else None)

    def guard(self, obj: Any) -> None:
        """Apply the error policy to every implementation ``obj`` (a registered plugin) has."""
        for caller in self.pm.get_hookcallers(obj) or ():
            for impl in caller.get_hookimpls():
                if impl.plugin is obj and not (impl.wrapper or impl.hookwrapper) and \
                        not getattr(impl.function, "conveyor_guarded", False):
                    # Final to type checkers only: pluggy reads it at each call (pluggy>=1.3)
                    impl.function = _guarded(  # type: ignore[misc]
                        self, caller.name, impl.plugin_name, impl.function)

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


#: distributions whose plugins register first and run first (``tryfirst``)
FIRST_PARTY = frozenset({"conveyor-jobs", "conveyor-sandbox", "conveyor-judge", "conveyor-cad"})


def _check_codes(result: Any) -> Any:
    codes = list(result or ())
    for code in codes:
        if not isinstance(code, ErrorCode):
            raise PluginError(f"{code!r} is not an ErrorCode")
    return codes


#: a hook's check of what an implementation returns (raising refuses it, as if the call had failed)
RESULT_CHECKS: dict[str, Callable[[Any], Any]] = {"conveyor_error_codes": _check_codes}


def _guarded(host: PluginHost, hook: str, plugin: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    check = RESULT_CHECKS.get(hook)

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        token = calling_plugin.set(plugin)
        try:
            result = fn(*args)
            return check(result) if check is not None else result
        except Exception as exc:  # one broken plugin must not hide the others
            host._record(plugin, f"{hook}: {type(exc).__name__}: {exc}")
            return None
        finally:
            calling_plugin.reset(token)
    call.conveyor_guarded = True  # type: ignore[attr-defined]
    return call


class _Manager(pluggy.PluginManager):
    """pluggy's manager, running first-party plugins' implementations before the others'."""

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        self.first_party: set[int] = set()
        self.host: PluginHost | None = None

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        """Register a plugin, its implementations under the error policy (``PluginHost.guard``)."""
        registered = super().register(plugin, name)
        if registered is not None and self.host is not None:
            self.host.guard(plugin)
        return registered

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is not None and id(plugin) in self.first_party and not (
                opts.get("trylast") or opts.get("wrapper") or opts.get("hookwrapper")):
            opts = {**opts, "tryfirst": True}
        return opts


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
    pm = _Manager("conveyor")
    pm.add_hookspecs(hookspecs)
    host = PluginHost(pm)
    pm.host = host
    pm.hook.conveyor_add_hookspecs.call_historic(kwargs={"pluginmanager": pm})

    def add(name: str, obj: Any, dist: str | None, version: str | None) -> None:
        if pm.has_plugin(name) or pm.is_registered(obj):
            return
        if dist in FIRST_PARTY:
            pm.first_party.add(id(obj))
        try:
            pm.register(obj, name=name)
        except Exception as exc:
            host._record(name, f"register: {type(exc).__name__}: {exc}")
            return
        host.infos[name] = PluginInfo(name, getattr(obj, "__name__", repr(obj)), dist, version, _hooks_of(obj))

    if entry_points:
        # first-party plugins register first, so a third party cannot shadow a built-in id
        eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP),
                     key=lambda e: (_dist_name(e) not in FIRST_PARTY, e.name))
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
