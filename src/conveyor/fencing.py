"""The fencing rule, written once: an attempt may change its job only while it is the job's live attempt.

A job's ``attempt_id`` grows at every claim. A worker that lost its lease (and whose job
another worker took over), or whose job was cancelled or released, still holds the old
number; every write it makes is conditioned on this rule, so it can never overwrite the
newer attempt's work. The rule has three renderings, all built here from the same parts:
a SQLAlchemy WHERE clause (``fenced``), a test of a row already read under lock
(``is_live``) and the text of the PostgreSQL one-statement steps (``fenced_sql``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_

from conveyor.models import JobStatus
from conveyor.schema import jobs

#: the statuses in which an attempt is live unless a caller widens them
LIVE: tuple[str, ...] = (JobStatus.RUNNING.value,)


def fenced(job_id: Any, attempt_id: Any, statuses: tuple[str, ...] = LIVE) -> ColumnElement[bool]:
    """The WHERE clause selecting ``job_id``'s row only while ``attempt_id`` is its live attempt."""
    status = jobs.c.status == statuses[0] if len(statuses) == 1 else jobs.c.status.in_(statuses)
    return and_(jobs.c.id == job_id, jobs.c.attempt_id == attempt_id, status)


def is_live(row: Any, attempt_id: int, statuses: tuple[str, ...] = LIVE) -> bool:
    """Whether ``row`` (a job read under a row lock, or None) is still held by ``attempt_id``."""
    return row is not None and row.attempt_id == attempt_id and row.status in statuses


def fenced_sql(alias: str, attempt: str) -> str:
    """The rule as SQL text over the jobs row ``alias``, for ``attempt`` (an SQL expression).

    The status is compared through an expression on purpose: PostgreSQL must find the
    rows by primary key, and a planner without fresh statistics otherwise walks the
    status index, i.e. every running job.
    """
    return f"{alias}.attempt_id = {attempt} AND ({alias}.status || '') = '{LIVE[0]}'"
