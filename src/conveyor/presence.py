"""Rows of ``conveyor_workers``: who is running, and whether it makes progress."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.exc import IntegrityError

from conveyor import __version__
from conveyor.db import utcnow
from conveyor.schema import workers


def register(engine: Engine, name: str, role: str, slots: int = 0) -> None:
    """Record a starting process (replacing a previous row with the same name)."""
    now = utcnow()
    row = {"name": name, "role": role, "host": socket.gethostname(), "pid": os.getpid(), "slots": slots,
           "in_flight": 0, "version": __version__, "started_at": now, "last_progress_at": now,
           "last_seen_at": now, "stopped_at": None}
    with engine.begin() as conn:
        conn.execute(delete(workers).where(workers.c.name == name))
        try:
            with conn.begin_nested():
                conn.execute(workers.insert(), [row])
        except IntegrityError:
            pass


def beat(engine: Engine, name: str, in_flight: int, progressed: bool) -> None:
    """Record that the process is alive (and, if it progressed, that too)."""
    now = utcnow()
    values: dict[str, Any] = {"in_flight": in_flight, "last_seen_at": now}
    if progressed:
        values["last_progress_at"] = now
    with engine.begin() as conn:
        conn.execute(update(workers).where(workers.c.name == name).values(**values))


def stopped(engine: Engine, name: str) -> None:
    """Mark a process as stopped cleanly."""
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(update(workers).where(workers.c.name == name).values(stopped_at=now, in_flight=0,
                                                                          last_seen_at=now))


def list_workers(engine: Engine, stale_after_s: float = 120.0) -> list[dict[str, Any]]:
    """Every known process with an ``alive`` flag (seen within ``stale_after_s`` and not stopped)."""
    now = utcnow()
    with engine.connect() as conn:
        rows = conn.execute(select(workers).order_by(workers.c.role, workers.c.name)).mappings().all()
    out = []
    for r in rows:
        d = dict(r)
        d["alive"] = r["stopped_at"] is None and r["last_seen_at"] > now - timedelta(seconds=stale_after_s)
        out.append(d)
    return out
