"""Queue backends, chosen by URL scheme and imported on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from conveyor.errors import ConfigError
from conveyor.queue.base import START_CURSOR, Entry, Message, Pressure, Queue, Reclaimed

__all__ = ["START_CURSOR", "Entry", "Message", "Pressure", "Queue", "Reclaimed", "open_queue"]

#: scheme → (module, factory name, extra that provides its dependency)
BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "sql": ("conveyor.queue.sql", "SqlQueue", None),
    "memory": ("conveyor.queue.memory", "shared_memory_queue", None),
    "redis": ("conveyor.queue.redis", "RedisQueue", "redis"),
    "rediss": ("conveyor.queue.redis", "RedisQueue", "redis"),
}


def open_queue(url: str, engine: Engine | None = None, **options: Any) -> Queue:
    """Open the queue a ``CONVEYOR_QUEUE_URL`` names.

    ``transactional=False`` keeps a ``sql`` queue out of callers' transactions: its table
    is then in another database than the jobs (the control database of a
    database-per-tenant deployment).
    """
    scheme = url.split("://", 1)[0] if "://" in url else url
    if scheme not in BACKENDS:
        raise ConfigError(f"CONVEYOR_QUEUE_URL {url!r}: unknown queue scheme {scheme!r}; "
                          f"use one of: {', '.join(sorted(BACKENDS))}")
    modname, factory, extra = BACKENDS[scheme]
    try:
        module = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        hint = f"pip install 'conveyor-jobs[{extra}]'" if extra else "reinstall conveyor-jobs"
        raise ConfigError(f"queue backend {scheme!r} needs {exc.name!r}: {hint}") from None
    make: Callable[..., Queue] = getattr(module, factory)
    transactional = options.pop("transactional", True)
    if scheme == "sql":
        if engine is None:
            raise ConfigError("the sql queue lives in the job database: pass its engine")
        return make(engine, stream=options.get("stream", "conveyor:jobs"),
                    transactional=transactional)
    if scheme == "memory":
        return make(url)
    return make(url, **options)
