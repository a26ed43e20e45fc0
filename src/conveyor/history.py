"""The dashboard's history: one row per minute and tenant in ``conveyor_stats``, rolled up by the scheduler's leader.

Each whole minute gets, per tenant, the jobs submitted, succeeded and failed in it and the
p50 and p99 of submit-to-finish of the jobs that finished in it; a row for tenant ``*``
holds the deployment's totals and the queue and outbox gauges as measured at roll-up
time. The dashboard draws the last hour of them; rows older than ``KEEP`` are deleted.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from conveyor.db import utcnow
from conveyor.models import JobStatus
from conveyor.schema import jobs, stats

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.store import Scope

log = logging.getLogger("conveyor.history")

ALL = "*"
#: minutes a roll-up fills at most (the chart's span); older gaps stay empty
SPAN = 60
#: how long rows are kept
KEEP = timedelta(days=2)
MINUTE = timedelta(minutes=1)
COUNTS = ("submitted", "succeeded", "failed")
GAUGES = ("queue_length", "queue_pending", "oldest_age_ms", "outbox_pending")


def _pct(values: list[float], q: float) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))])


def _minute_rows(conn: Any, start: datetime) -> dict[str, dict[str, Any]]:
    """The rows of one minute, by tenant (``*`` included)."""
    end = start + MINUTE
    counts: dict[str, dict[str, Any]] = defaultdict(lambda: {k: 0 for k in COUNTS})
    for tenant, n in conn.execute(select(jobs.c.tenant_id, func.count()).where(
            jobs.c.created_at >= start, jobs.c.created_at < end).group_by(jobs.c.tenant_id)):
        counts[tenant]["submitted"] = int(n)
    took: dict[str, list[float]] = defaultdict(list)
    done = select(jobs.c.tenant_id, jobs.c.status, jobs.c.created_at, jobs.c.finished_at).where(
        jobs.c.finished_at >= start, jobs.c.finished_at < end,
        jobs.c.status.in_([JobStatus.SUCCEEDED.value, JobStatus.FAILED.value]))
    for tenant, status, created, finished in conn.execute(done):
        counts[tenant]["succeeded" if status == JobStatus.SUCCEEDED.value else "failed"] += 1
        took[tenant].append((finished - created).total_seconds() * 1000)
    rows = {t: {**c, "p50_ms": _pct(took[t], 0.5), "p99_ms": _pct(took[t], 0.99)} for t, c in counts.items()}
    every = [ms for values in took.values() for ms in values]
    rows[ALL] = {**{k: sum(r[k] for t, r in rows.items()) for k in COUNTS},
                 "p50_ms": _pct(every, 0.5), "p99_ms": _pct(every, 0.99)}
    return rows


def roll_up(app: Conveyor, now: datetime | None = None) -> int:
    """Record every whole minute not yet recorded (the last ``SPAN`` at most); how many minutes were written."""
    now = now or utcnow()
    this_minute = now.replace(second=0, microsecond=0)
    engine = app.engine
    with engine.connect() as conn:
        last = conn.execute(select(stats.c.minute).where(stats.c.tenant_id == ALL)
                            .order_by(stats.c.minute.desc()).limit(1)).scalar()
    start = max(last + MINUTE if last else this_minute - MINUTE, this_minute - SPAN * MINUTE)
    if start >= this_minute:
        return 0
    gauges = _gauges(app)
    written = 0
    minute = start
    while minute < this_minute:
        with engine.begin() as conn:
            rows = _minute_rows(conn, minute)
            if minute + MINUTE == this_minute:
                rows[ALL].update(gauges)  # the gauges are now's: they belong to the newest minute
            try:
                # every row names every column: an executemany takes its columns from the first row
                blank = dict.fromkeys(GAUGES)
                conn.execute(insert(stats), [{"minute": minute, "tenant_id": t, **blank, **r}
                                             for t, r in rows.items()])
                written += 1
            except IntegrityError:  # another scheduler recorded it (a leader change in between)
                conn.rollback()
        minute += MINUTE
    with engine.begin() as conn:
        conn.execute(delete(stats).where(stats.c.minute < this_minute - KEEP))
    return written


def _gauges(app: Conveyor) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        p = app.queue.pressure()
        out.update(queue_length=p.length, queue_pending=p.pending, oldest_age_ms=p.oldest_age_ms)
    except Exception as exc:  # the queue is down: the chart shows a gap
        log.warning("queue gauges not recorded: %s", exc)
    out["outbox_pending"] = app.store.count_pending_outbox()
    return out


def recent(app: Conveyor, scope: Scope, minutes: int = SPAN, *, gauges: bool = False,
           now: datetime | None = None) -> list[dict[str, Any]]:
    """The last ``minutes`` minutes for ``scope`` (its tenant's rows, or the deployment's), oldest first.

    Every minute is present (zeros where nothing happened, None where nothing was recorded);
    the gauges only with ``gauges`` (admins: they are the deployment's).
    """
    now = now or utcnow()
    end = now.replace(second=0, microsecond=0)
    start = end - minutes * MINUTE
    tenant = ALL if scope.tenant is None else scope.tenant
    tenants = sorted({tenant, ALL})
    with app.engine.connect() as conn:
        found = conn.execute(select(stats).where(
            and_(stats.c.tenant_id.in_(tenants), stats.c.minute >= start, stats.c.minute < end))).all()
    mine = {r.minute: r._mapping for r in found if r.tenant_id == tenant}
    whole = {r.minute: r._mapping for r in found if r.tenant_id == ALL}
    out = []
    for k in range(minutes):
        m = start + k * MINUTE
        recorded = m in whole
        row = mine.get(m)
        item: dict[str, Any] = {"minute": m.isoformat() + "Z", "recorded": recorded}
        for c in COUNTS:
            item[c] = (row[c] if row is not None else 0) if recorded else None
        for c in ("p50_ms", "p99_ms"):
            item[c] = row[c] if row is not None else None
        if gauges:
            for g in GAUGES:
                item[g] = whole[m][g] if recorded else None
        out.append(item)
    return out
