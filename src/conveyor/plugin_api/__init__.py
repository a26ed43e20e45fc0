"""Everything a plugin may use of the core: one stable surface, checked by a test.

A plugin imports core names from here (and, for HTTP routes, from
``conveyor.plugin_api.http``) and from nowhere else in ``conveyor``; what is not
listed here is the core's own business and may change in any release. The first-party
plugins are held to it by ``tests/test_plugin_api.py``.

Names are imported on first use, so a plugin module that needs ``JobError`` does not
load the worker, the API or SQLAlchemy's dialects (a CAD conversion's box imports
converter modules, and pays for every import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor import __version__
    from conveyor.app import Conveyor
    from conveyor.cli import deployment
    from conveyor.config import Settings, load_settings
    from conveyor.dashboard import UiPage
    from conveyor.db import connection, utcnow
    from conveyor.errors import CATALOG, Cancelled, ConfigError, ConveyorError, ErrorCode, JobError, PluginError
    from conveyor.hookspecs import hookimpl, hookspec
    from conveyor.jobstore import JobStore
    from conveyor.kinds import JobContext, JobKind, RetryPolicy
    from conveyor.metrics import Metrics, get_metrics
    from conveyor.migrate import Migrations, run_migrations
    from conveyor.models import Job, JobStatus, iso
    from conveyor.outbox import Dispatcher
    from conveyor.plugins import PluginHost, get_plugins, load_plugins
    from conveyor.presence import list_workers
    from conveyor.registry import Family, Registry
    from conveyor.runner import Runner
    from conveyor.storage import Storage
    from conveyor.store import LiveAttempt, Scope, list_jobs, live_attempt, logline
    from conveyor.text import printable
    from conveyor.worker import Worker

#: public name → the core module that defines it
_WHERE: dict[str, str] = {
    "__version__": "conveyor",
    "Conveyor": "conveyor.app",
    "deployment": "conveyor.cli",
    "Settings": "conveyor.config",
    "load_settings": "conveyor.config",
    "connection": "conveyor.db",
    "utcnow": "conveyor.db",
    "UiPage": "conveyor.dashboard",
    "CATALOG": "conveyor.errors",
    "Cancelled": "conveyor.errors",
    "ConfigError": "conveyor.errors",
    "ConveyorError": "conveyor.errors",
    "ErrorCode": "conveyor.errors",
    "JobError": "conveyor.errors",
    "PluginError": "conveyor.errors",
    "hookimpl": "conveyor.hookspecs",
    "hookspec": "conveyor.hookspecs",
    "JobStore": "conveyor.jobstore",
    "JobContext": "conveyor.kinds",
    "JobKind": "conveyor.kinds",
    "RetryPolicy": "conveyor.kinds",
    "Metrics": "conveyor.metrics",
    "get_metrics": "conveyor.metrics",
    "Migrations": "conveyor.migrate",
    "run_migrations": "conveyor.migrate",
    "Job": "conveyor.models",
    "JobStatus": "conveyor.models",
    "iso": "conveyor.models",
    "Dispatcher": "conveyor.outbox",
    "PluginHost": "conveyor.plugins",
    "get_plugins": "conveyor.plugins",
    "load_plugins": "conveyor.plugins",
    "list_workers": "conveyor.presence",
    "Family": "conveyor.registry",
    "Registry": "conveyor.registry",
    "Runner": "conveyor.runner",
    "Storage": "conveyor.storage",
    "LiveAttempt": "conveyor.store",
    "Scope": "conveyor.store",
    "list_jobs": "conveyor.store",
    "live_attempt": "conveyor.store",
    "logline": "conveyor.store",
    "printable": "conveyor.text",
    "Worker": "conveyor.worker",
}

__all__ = [
    "CATALOG", "Cancelled", "ConfigError", "Conveyor", "ConveyorError", "Dispatcher", "ErrorCode", "Family",
    "Job", "JobContext", "JobError", "JobKind", "JobStatus", "JobStore", "LiveAttempt", "Metrics", "Migrations",
    "PluginError", "PluginHost", "Registry", "RetryPolicy", "Runner", "Scope", "Settings", "Storage", "UiPage",
    "Worker", "__version__", "connection", "deployment", "get_metrics", "get_plugins", "hookimpl", "hookspec", "iso",
    "list_jobs", "list_workers", "live_attempt", "load_plugins", "load_settings", "logline", "printable",
    "run_migrations", "utcnow",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"conveyor.plugin_api has no {name!r}: it is not part of what plugins may use "
                             "(see docs/howto/plugin.md, 'What a plugin may import')")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
