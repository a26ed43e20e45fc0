"""PostgreSQL's one-statement dispatch, claim and finalize: each step of a job's hot path in one round trip.

``store.claim`` and ``store.finalize`` use these on PostgreSQL and fall back to their
general code for whatever these leave undone (expired leases, stale results, failures),
so the fencing rules live in one place and these only skip the round trips. Each
statement updates its rows and inserts their events in one CTE, so it commits (or
fails) as a whole even outside a transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from conveyor.fencing import fenced_sql
from conveyor.models import EventAction, Job, JobStatus, iso
from conveyor.notify import OUTBOX_CHANNEL
from conveyor.schema import events, jobs, outbox

_EVENT_COLS = "job_id, file_id, attempt_id, action, payload, created_at"

# the claim returns a whole Job; naming the columns saves building cursor.description per claim
_JOB_NAMES = tuple(Job.__dataclass_fields__)
_JOB_COLS = ", ".join(f"j.{c}" for c in _JOB_NAMES)

# queued → running for every due job among :claim_ids; one claimed event per job, same statement.
# status is compared through an expression on purpose: the rows must be found by primary key.
# A planner without fresh statistics otherwise walks the status index, i.e. every queued job.
_CLAIM = f"""
WITH c AS (
  UPDATE {jobs.name} AS j
     SET status = '{JobStatus.RUNNING.value}', attempt_id = j.attempt_id + 1, attempts = j.attempts + 1,
         lease_owner = %(owner)s, lease_expires_at = %(expires)s, started_at = %(now)s, updated_at = %(now)s,
         next_attempt_at = NULL
   WHERE j.id = ANY(%(claim_ids)s::varchar[]) AND (j.status || '') = '{JobStatus.QUEUED.value}'
     AND (j.next_attempt_at IS NULL OR j.next_attempt_at <= %(now)s)
  RETURNING {_JOB_COLS}
),
e AS (SELECT * FROM unnest(%(claim_ids)s::varchar[], %(entries)s::varchar[]) AS e(id, entry_id)),
ev_c AS (
  INSERT INTO {events.name} ({_EVENT_COLS})
  SELECT c.id, c.file_id, c.attempt_id, '{EventAction.CLAIMED.value}',
         json_build_object('consumer', %(owner)s::text, 'entry_id', e.entry_id), %(now)s
    FROM c JOIN e ON e.id = c.id
)
SELECT * FROM c
"""

# running → succeeded for every outcome whose attempt still holds its job (conveyor.fencing)
_SUCCEED = f"""
WITH v AS (SELECT * FROM unnest(%(ids)s::varchar[], %(attempts)s::integer[], %(results)s::text[])
             AS v(id, attempt_id, result)),
u AS (
  UPDATE {jobs.name} AS j
     SET status = '{JobStatus.SUCCEEDED.value}', result = CAST(v.result AS json), error_code = NULL,
         finished_at = %(now)s, updated_at = %(now)s, lease_owner = NULL, lease_expires_at = NULL
    FROM v
   WHERE j.id = ANY(%(ids)s::varchar[]) AND j.id = v.id AND {fenced_sql("j", "v.attempt_id")}
  RETURNING j.id, j.attempt_id, j.file_id
),
ev_s AS (
  INSERT INTO {events.name} ({_EVENT_COLS})
  SELECT u.id, u.file_id, u.attempt_id, '{EventAction.SUCCEEDED.value}', CAST('{{}}' AS json), %(now)s FROM u
)
SELECT id, file_id FROM u
"""
# pending → dispatched for outbox rows the caller has locked and published
_DISPATCHED = f"""
WITH v AS (SELECT * FROM unnest(%(ids)s::bigint[], %(entries)s::varchar[]) AS v(id, entry_id)),
u AS (
  UPDATE {outbox.name} AS o
     SET status = 'dispatched', dispatched_at = %(now)s, stream_entry_id = v.entry_id, attempts = o.attempts + 1
    FROM v
   WHERE o.id = ANY(%(ids)s::bigint[]) AND o.id = v.id
  RETURNING o.id, o.job_id, v.entry_id
)
INSERT INTO {events.name} ({_EVENT_COLS})
SELECT u.job_id, NULL, 0, '{EventAction.DISPATCHED.value}',
       json_build_object('stream_entry_id', u.entry_id, 'outbox_id', u.id), %(now)s FROM u
"""


# queued jobs, their pending outbox rows and submitted events, and the dispatchers' wake-up, from
# one JSON array (psycopg adapts one text parameter far faster than a dozen arrays of strings);
# the array's order is the outbox order
_SUBMIT = f"""
WITH t AS (
  SELECT r->>'id' AS id, r->>'kind' AS kind, r->>'tenant_id' AS tenant_id, r->>'org_id' AS org_id,
         CAST(r->>'priority' AS integer) AS priority, r->'payload' AS payload,
         CAST(r->>'max_attempts' AS integer) AS max_attempts, CAST(r->>'due' AS timestamp) AS due,
         r->>'file_id' AS file_id, r->>'trace_id' AS trace_id, r->'message' AS message, r->'event' AS event_payload, n
    FROM json_array_elements(CAST(%(rows)s AS json)) WITH ORDINALITY AS t(r, n)
),
j AS (
  INSERT INTO {jobs.name} (id, kind, tenant_id, org_id, status, priority, payload, error_history, attempt_id,
                           attempts, max_attempts, next_attempt_at, file_id, trace_id, created_at, updated_at)
  SELECT id, kind, tenant_id, org_id, '{JobStatus.QUEUED.value}', priority, payload,
         CAST('[]' AS json), 0, 0, max_attempts, due, file_id, trace_id, %(now)s, %(now)s
    FROM t
),
o AS (
  INSERT INTO {outbox.name} (job_id, stream, message, status, attempts, next_attempt_at, created_at)
  SELECT id, %(stream)s, message, 'pending', 0, COALESCE(due, %(now)s), %(now)s FROM t ORDER BY n
),
e AS (
  INSERT INTO {events.name} ({_EVENT_COLS})
  SELECT id, file_id, 0, '{EventAction.SUBMITTED.value}', event_payload, %(now)s FROM t ORDER BY n
)
SELECT pg_notify('{OUTBOX_CHANNEL}', '')
"""


def insert_submitted(conn: Connection, job_rows: Sequence[Mapping[str, Any]], box_rows: Sequence[Mapping[str, Any]],
                     ev_rows: Sequence[Mapping[str, Any]], now: datetime, stream: str) -> None:
    """Insert new jobs (no idempotency keys), their outbox rows and events, and NOTIFY, in one statement.

    Takes the rows ``submit_many`` builds for the general path, in the same order.
    """
    rows = [{"id": r["id"], "kind": r["kind"], "tenant_id": r["tenant_id"], "org_id": r["org_id"],
             "priority": r["priority"], "payload": r["payload"], "max_attempts": r["max_attempts"],
             "due": r["next_attempt_at"].isoformat() if r["next_attempt_at"] else None, "file_id": r["file_id"],
             "trace_id": r["trace_id"], "message": b["message"], "event": e["payload"]}
            for r, b, e in zip(job_rows, box_rows, ev_rows, strict=True)]
    _execute(conn, _SUBMIT, {"rows": json.dumps(rows), "now": now, "stream": stream})


def _cte_body(sql: str) -> str:
    """The WITH list of one of the statements above, without the final SELECT."""
    head, _, _ = sql.strip().rpartition("\nSELECT ")
    return head.strip()[len("WITH "):]


# _SUCCEED and _CLAIM in one statement: one row per claimed job (or one all-NULL row),
# each carrying the list of [job id, file id] that succeeded
_SUCCEED_AND_CLAIM = f"""
WITH {_cte_body(_SUCCEED)},
{_cte_body(_CLAIM)}
SELECT d.done, {", ".join(f"c.{n}" for n in _JOB_NAMES)}
  FROM (SELECT json_agg(json_build_array(u.id, u.file_id)) AS done FROM u) AS d LEFT JOIN c ON true
"""


def _execute(conn: Connection, sql: str, params: Mapping[str, Any]) -> Any:
    """Run on the connection's psycopg cursor, in its transaction if one is open.

    These statements run for every job; SQLAlchemy's per-execution work (result
    metadata, row processors) was most of their client-side cost.
    """
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    cur.execute(sql, params)
    return cur


_JOB_WITH_EVENTS = f"""
SELECT {_JOB_COLS},
       (SELECT json_agg(json_build_array(e.id, e.attempt_id, e.action, e.payload, e.created_at) ORDER BY e.id)
          FROM {events.name} AS e WHERE e.job_id = j.id)
  FROM {jobs.name} AS j
 WHERE j.id = %(id)s AND (CAST(%(tenant)s AS text) IS NULL OR j.tenant_id = %(tenant)s)
"""


def job_with_events(conn: Connection, job_id: str, tenant: str | None) -> tuple[Job, list[dict[str, Any]]] | None:
    """One job and its change log (oldest first) in one statement; None when absent (or another tenant's)."""
    row = _execute(conn, _JOB_WITH_EVENTS, {"id": job_id, "tenant": tenant}).fetchone()
    if row is None:
        return None
    job = Job.from_row(dict(zip(_JOB_NAMES, row)))
    log = [{"id": e[0], "attempt_id": e[1], "action": e[2], "payload": e[3] or {},
            "created_at": iso(datetime.fromisoformat(e[4]))} for e in row[-1] or ()]
    return job, log


def mark_dispatched(conn: Connection, rows: Sequence[tuple[int, str]], now: datetime) -> None:
    """Stamp locked outbox rows ``(outbox id, stream entry id)`` dispatched and add their events."""
    _execute(conn, _DISPATCHED, {"ids": [r[0] for r in rows], "entries": [r[1] for r in rows], "now": now})


def claim_queued(conn: Connection, by_job: Mapping[str, str], owner: str, now: datetime, expires: datetime
                 ) -> tuple[list[tuple[Job, str]], list[dict[str, Any]]]:
    """Claim the due, queued jobs among ``{job_id: entry_id}``; returns (job, entry id) pairs and their events."""
    cur = _execute(conn, _CLAIM, {"claim_ids": list(by_job), "entries": list(by_job.values()), "owner": owner,
                                  "now": now, "expires": expires})
    return _claimed(cur.fetchall(), by_job, owner, now)


def _claimed(rows: Sequence[Sequence[Any]], by_job: Mapping[str, str], owner: str, now: datetime
             ) -> tuple[list[tuple[Job, str]], list[dict[str, Any]]]:
    out: list[tuple[Job, str]] = []
    ev: list[dict[str, Any]] = []
    for row in rows:
        job = Job.from_row(dict(zip(_JOB_NAMES, row)))
        entry = by_job[job.id]
        out.append((job, entry))
        ev.append({"job_id": job.id, "attempt_id": job.attempt_id, "action": EventAction.CLAIMED.value,
                   "payload": {"consumer": owner, "entry_id": entry}, "created_at": now, "file_id": job.file_id})
    return out, ev


def succeed(conn: Connection, done: Sequence[tuple[str, int, str | None]], now: datetime
            ) -> tuple[set[str], list[dict[str, Any]]]:
    """Record ``(job_id, attempt_id, result as JSON text)`` successes still fenced in.

    Returns the job ids recorded and their events; the others' attempts no longer hold their job.
    """
    params = {"ids": [d[0] for d in done], "attempts": [d[1] for d in done], "results": [d[2] for d in done],
              "now": now}
    return _succeeded(_execute(conn, _SUCCEED, params).fetchall(), done, now)


def _succeeded(rows: Sequence[Sequence[Any]], done: Sequence[tuple[str, int, str | None]], now: datetime
               ) -> tuple[set[str], list[dict[str, Any]]]:
    attempt = {d[0]: d[1] for d in done}
    ev = [{"job_id": job_id, "attempt_id": attempt[job_id], "action": EventAction.SUCCEEDED.value, "payload": {},
           "created_at": now, "file_id": file_id} for job_id, file_id in rows]
    return {r[0] for r in rows}, ev


def succeed_and_claim(conn: Connection, done: Sequence[tuple[str, int, str | None]], now: datetime,
                      by_job: Mapping[str, str], owner: str, expires: datetime
                      ) -> tuple[set[str], list[dict[str, Any]], list[tuple[Job, str]], list[dict[str, Any]]]:
    """``succeed`` and ``claim_queued`` in one statement: one round trip, one commit.

    Returns (job ids recorded, their events, claimed (job, entry id) pairs, their events).
    """
    rows = _execute(conn, _SUCCEED_AND_CLAIM, {
        "ids": [d[0] for d in done], "attempts": [d[1] for d in done], "results": [d[2] for d in done],
        "claim_ids": list(by_job), "entries": list(by_job.values()), "owner": owner, "now": now,
        "expires": expires}).fetchall()
    got, ev_done = _succeeded(rows[0][0] or [], done, now)
    claimed, ev_claimed = _claimed([r[1:] for r in rows if r[1] is not None], by_job, owner, now)
    return got, ev_done, claimed, ev_claimed
