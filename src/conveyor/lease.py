"""Named leases in the database (``conveyor_leases``) for singletons such as the scheduler leader."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.exc import IntegrityError

from conveyor.db import utcnow
from conveyor.schema import leases


def acquire(engine: Engine, name: str, holder: str, ttl_s: float) -> int | None:
    """Take or renew a lease; returns its fencing token, or None if another holder's lease is live."""
    now = utcnow()
    expires = now + timedelta(seconds=ttl_s)
    with engine.begin() as conn:
        res = conn.execute(
            update(leases).where(leases.c.name == name,
                                 or_(leases.c.holder == holder, leases.c.holder.is_(None), leases.c.expires_at < now))
            .values(holder=holder, expires_at=expires,
                    token=leases.c.token + 1)
            .returning(leases.c.token)).first()
        if res is not None:
            return int(res[0])
        exists = conn.execute(select(leases.c.name).where(leases.c.name == name)).first()
        if exists is not None:
            return None
        try:
            with conn.begin_nested():
                conn.execute(leases.insert(), [{"name": name, "holder": holder, "token": 1, "expires_at": expires}])
        except IntegrityError:
            return None
        return 1


def release(engine: Engine, name: str, holder: str) -> None:
    """Give a lease up so another holder can take it at once."""
    with engine.begin() as conn:
        conn.execute(update(leases).where(leases.c.name == name, leases.c.holder == holder)
                     .values(holder=None, expires_at=None))


def current(engine: Engine, name: str) -> dict[str, Any] | None:
    """The lease's holder, token and expiry, or None."""
    with engine.connect() as conn:
        row = conn.execute(select(leases).where(leases.c.name == name)).mappings().first()
    return dict(row) if row else None
