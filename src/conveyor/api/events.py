"""Server-Sent Events from ``conveyor_job_events``: every state change, in order, resumable.

Each event is one SSE message whose ``id`` is the event row's id and whose ``data`` is the
event as JSON; ``Last-Event-ID`` (or ``?after=``) resumes after it. Comments (``: keep-alive``)
go out every ``CONVEYOR_SSE_HEARTBEAT_SECONDS`` so proxies keep the connection. A job's stream
ends with an ``end`` event once the job is final and its events are all sent.

The table is polled every ``CONVEYOR_SSE_POLL_SECONDS``. Ids are handed out at insert time
and transactions commit in any order, so a reader never moves past an id it has not seen
yet until ``GAP_WAIT_S`` after the next one was written: a slow transaction's event is
delivered late, in id order, rather than skipped.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine

from conveyor.api.deps import AppDep, IdentityDep, ScopeDep
from conveyor.api.errors import ApiError
from conveyor.api.jobs import _errors, visible_job
from conveyor.api.views import event_view
from conveyor.db import utcnow
from conveyor.jobstore import JobStore
from conveyor.models import JobStatus
from conveyor.store import Scope

GAP_WAIT_S = 5.0
ID_BATCH = 1000
ROW_BATCH = 500
RETRY_MS = 2000

router = APIRouter(tags=["events"])


@dataclass
class Batch:
    """What one poll found."""

    events: list[dict[str, Any]]
    more: bool  # a full batch: poll again at once
    waiting: bool  # an earlier id is not committed yet


class Feed:
    """Reads committed events after a position, in id order, never skipping a late commit."""

    def __init__(self, store: JobStore, scope: Scope, job_id: str | None = None, after: int = 0,
                 gap_wait_s: float = GAP_WAIT_S) -> None:
        self.store, self.scope, self.job_id = store, scope, job_id
        self.position = after  # every event up to here was delivered or is not ours
        self.gap_wait_s = gap_wait_s

    def poll(self) -> Batch:
        """The next events of this scope (and job), oldest first."""
        ids = self.store.event_ids_after(self.position, ID_BATCH)
        safe, waiting = self.position, False
        now = utcnow()
        for event_id, created in ids:
            if event_id != safe + 1 and (now - created).total_seconds() < self.gap_wait_s:
                waiting = True  # ids between safe and event_id may still commit
                break
            safe = event_id
        if safe == self.position:
            return Batch([], False, waiting)
        rows = self.store.events_after(self.position, safe, self.scope, self.job_id, ROW_BATCH)
        full = len(rows) == ROW_BATCH
        self.position = rows[-1]["id"] if full else safe
        return Batch(rows, full or (len(ids) == ID_BATCH and not waiting), waiting)


    def drain(self) -> list[dict[str, Any]]:
        """Every event of this scope (and job) after the position, with no wait for gaps.

        For a final job: its status and last event committed together, and nothing of it is pending.
        """
        rows: list[dict[str, Any]] = []
        while True:
            got = self.store.events_after(self.position, 2**62, self.scope, self.job_id, ROW_BATCH)
            rows += got
            if got:
                self.position = got[-1]["id"]
            if len(got) < ROW_BATCH:
                return rows


def first_event_id(engine: Engine, job_id: str) -> int:
    """The id of a job's first event (0 when it has none)."""
    from sqlalchemy import func, select

    from conveyor.schema import events
    with engine.connect() as conn:
        return int(conn.execute(select(func.min(events.c.id)).where(events.c.job_id == job_id)).scalar() or 0)


def sse_message(data: Any, event_id: int | None = None, event: str | None = None) -> str:
    """One SSE message (``data`` as one line of JSON)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False))
    return "\n".join(lines) + "\n\n"


def _start(last_event_id: str | None, after: int | None) -> int | None:
    raw = last_event_id if last_event_id not in (None, "") else after
    if raw is None:
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ApiError(422, "invalid_request", "Last-Event-ID must be an event id (a whole number)") from None
    if value < 0:
        raise ApiError(422, "invalid_request", "Last-Event-ID must be >= 0")
    return value


async def _stream(request: Request, feed: Feed, admin: bool, heartbeat_s: float, poll_s: float,
                  job_status: Any = None) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    beat = time.monotonic()
    while True:
        final: Any = False
        if job_status is not None:
            final = await anyio.to_thread.run_sync(job_status)  # read before the events: its last event is in
        try:
            if final:
                batch = Batch(await anyio.to_thread.run_sync(feed.drain), False, False)
            else:
                batch = await anyio.to_thread.run_sync(feed.poll)
        except Exception as exc:  # the database went away: tell the client, which resumes with Last-Event-ID
            yield sse_message({"code": "unavailable", "message": f"event feed interrupted ({type(exc).__name__}); "
                                                                 "reconnect with Last-Event-ID"}, event="error")
            return
        for ev in batch.events:
            yield sse_message(event_view(ev, admin), ev["id"])
        if final:
            yield sse_message({"job_id": feed.job_id, "status": final}, event="end")
            return
        now = time.monotonic()
        if batch.events:
            beat = now
        elif now - beat >= heartbeat_s:
            yield ": keep-alive\n\n"
            beat = now
        if batch.more:
            continue
        if await request.is_disconnected():
            return
        await anyio.sleep(poll_s)


def _response(body: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


_SSE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
              "description": "An event stream: `id:` the event id, `data:` the event as JSON."}}


@router.get("/jobs/{job_id}/events/stream", response_class=StreamingResponse, summary="Stream a job's events",
            responses={**_SSE, **_errors(404)})
async def stream_job_events(request: Request, job_id: str, identity: IdentityDep, scope: ScopeDep, app: AppDep,
                            last_event_id: Annotated[str | None, Header(max_length=20)] = None,
                            after: Annotated[int | None, Query(ge=0, description="Resume after this event id "
                                                                                 "(as Last-Event-ID).")] = None,
                            ) -> StreamingResponse:
    """The job's state changes from the first (or after `Last-Event-ID`), as they happen; ends with
    an `end` event once the job is final."""
    job = await anyio.to_thread.run_sync(visible_job, app, scope, job_id)
    start = _start(last_event_id, after)
    if start is None:
        start = max(0, await anyio.to_thread.run_sync(first_event_id, app.engine, job.id) - 1)
    feed = Feed(app.store, scope, job.id, start)

    def final_status() -> str | bool:
        status = app.get(job.id).status
        return status.value if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED) else False

    s = app.settings
    return _response(_stream(request, feed, identity.admin, s.sse_heartbeat_seconds, s.sse_poll_seconds,
                             final_status))


@router.get("/events/stream", response_class=StreamingResponse, summary="Stream every visible job's events",
            responses={**_SSE, **_errors()})
async def stream_events(request: Request, identity: IdentityDep, scope: ScopeDep, app: AppDep,
                        last_event_id: Annotated[str | None, Header(max_length=20)] = None,
                        after: Annotated[int | None, Query(ge=0, description="Resume after this event id "
                                                                             "(as Last-Event-ID).")] = None,
                        ) -> StreamingResponse:
    """State changes of every job the caller may see, from now (or after `Last-Event-ID`), until the
    client disconnects."""
    start = _start(last_event_id, after)
    if start is None:
        start = await anyio.to_thread.run_sync(app.store.last_event_id)
    feed = Feed(app.store, scope, None, start)
    s = app.settings
    return _response(_stream(request, feed, identity.admin, s.sse_heartbeat_seconds, s.sse_poll_seconds))
