"""A client of ``conveyor api``: submit, read, cancel, retry and wait for jobs over HTTP.

    from conveyor.client import Client
    with Client("http://127.0.0.1:7910", token) as c:
        job = c.submit("conveyor.echo", {"hello": "world"})
        done = c.wait(job["id"], timeout=60)

``AsyncClient`` has the same methods as coroutines. Both need httpx (the ``api`` extra).
Errors are ``ApiError`` with the answer's ``status``, ``code``, ``message``, ``detail`` and
``retry_after`` (seconds, for 429 and 503); ``wait`` raises ``conveyor.errors.WaitTimeout``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor.errors import ConfigError, ConveyorError, WaitTimeout

FINAL = frozenset({"succeeded", "failed", "cancelled"})
PREFIX = "/api/v1"


def _httpx() -> Any:
    try:
        import httpx
    except ModuleNotFoundError:
        raise ConfigError("conveyor.client needs httpx: pip install 'conveyor-jobs[api]'") from None
    return httpx


class ApiError(ConveyorError):
    """An answer of the API that is not a success."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.detail = status, code, message, detail
        self.retry_after = retry_after


@dataclass(frozen=True)
class SseMessage:
    """One message of an event stream."""

    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        """``data`` parsed as JSON."""
        return json.loads(self.data)


class SseParser:
    """Turns ``text/event-stream`` lines into messages (comments and ``retry:`` are skipped)."""

    def __init__(self) -> None:
        self.event, self.data, self.last_id = "message", [], None  # type: tuple[str, list[str], str | None]

    def feed(self, line: str) -> SseMessage | None:
        """Take one line; returns the message a blank line completes."""
        line = line.rstrip("\r\n")
        if not line:
            msg = SseMessage(self.event, "\n".join(self.data), self.last_id) if self.data else None
            self.event, self.data = "message", []
            return msg
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id":
            self.last_id = value
        return None


def parse_sse(lines: Iterable[str]) -> Iterator[SseMessage]:
    """Messages of a ``text/event-stream`` given line by line."""
    parser = SseParser()
    for line in lines:
        msg = parser.feed(line)
        if msg is not None:
            yield msg


def _raise_for(resp: Any) -> None:
    if resp.status_code < 400:
        return
    try:
        body = resp.json()
        err = body["error"]
        code, message, detail = str(err["code"]), str(err["message"]), err.get("detail")
    except Exception:
        code, message, detail = "internal_error" if resp.status_code >= 500 else "invalid_request", \
            resp.text[:500], None
    ra = resp.headers.get("retry-after")
    raise ApiError(resp.status_code, code, message, detail, float(ra) if ra and ra.isdigit() else None)


def _job_body(kind: str, payload: Any, priority: int, run_at: datetime | str | None, max_attempts: int | None,
              file_id: str | None, trace_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind, "payload": payload, "priority": priority}
    if run_at is not None:
        body["run_at"] = run_at.isoformat() if isinstance(run_at, datetime) else run_at
    for k, v in (("max_attempts", max_attempts), ("file_id", file_id), ("trace_id", trace_id)):
        if v is not None:
            body[k] = v
    return body


class _Base:
    def __init__(self, base_url: str, token: str | None = None, *, tenant: str | None = None,
                 org: str | None = None, timeout: float = 30.0) -> None:
        base = base_url.rstrip("/")
        if base.endswith(PREFIX):
            base = base[: -len(PREFIX)]
        self.base_url = base
        self.timeout = timeout
        self.headers: dict[str, str] = {}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if tenant:
            self.headers["x-tenant-id"] = tenant
        if org:
            self.headers["x-org-id"] = org

    @staticmethod
    def _list_params(status: str | None, kind: str | None, file_id: str | None, limit: int,
                     cursor: str | None) -> dict[str, Any]:
        params = {"status": status, "kind": kind, "file_id": file_id, "limit": limit, "cursor": cursor}
        return {k: v for k, v in params.items() if v is not None}

    @staticmethod
    def _stream_path(job_id: str | None) -> str:
        return f"{PREFIX}/jobs/{job_id}/events/stream" if job_id else f"{PREFIX}/events/stream"


class Client(_Base):
    """A synchronous client (httpx)."""

    def __init__(self, base_url: str, token: str | None = None, *, tenant: str | None = None,
                 org: str | None = None, timeout: float = 30.0, transport: Any = None) -> None:
        super().__init__(base_url, token, tenant=tenant, org=org, timeout=timeout)
        httpx = _httpx()
        self._http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout,
                                  transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._http.request(method, PREFIX + path, **kw)
        _raise_for(resp)
        return resp.json()

    def submit(self, kind: str, payload: Any = None, *, priority: int = 0, run_at: datetime | str | None = None,
               max_attempts: int | None = None, file_id: str | None = None, trace_id: str | None = None,
               idempotency_key: str | None = None) -> dict[str, Any]:
        """Submit a job; returns it (the existing one for a repeated ``idempotency_key``)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/jobs", headers=headers,  # type: ignore[no-any-return]
                          json=_job_body(kind, payload, priority, run_at, max_attempts, file_id, trace_id))

    def get(self, job_id: str) -> dict[str, Any]:
        """A job with its events and diagnostics."""
        return self._call("GET", f"/jobs/{job_id}")  # type: ignore[no-any-return]

    def list(self, *, status: str | None = None, kind: str | None = None, file_id: str | None = None,
             limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        """One page ``{"items", "next_cursor"}``, newest first."""
        return self._call("GET", "/jobs",  # type: ignore[no-any-return]
                          params=self._list_params(status, kind, file_id, limit, cursor))

    def cancel(self, job_id: str, reason: str = "") -> dict[str, Any]:
        """Cancel a queued or running job."""
        return self._call("POST", f"/jobs/{job_id}/cancel", json={"reason": reason})  # type: ignore[no-any-return]

    def retry(self, job_id: str) -> dict[str, Any]:
        """Run a failed or cancelled job again."""
        return self._call("POST", f"/jobs/{job_id}/retry")  # type: ignore[no-any-return]

    def events(self, job_id: str | None = None, *, last_event_id: int | None = None,
               read_timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Events as they happen (one job's until it is final, else every visible job's), resuming
        after ``last_event_id``. Reconnects with ``Last-Event-ID`` when the connection drops."""
        httpx = _httpx()
        last = last_event_id
        while True:
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            try:
                with self._http.stream("GET", self._stream_path(job_id), headers=headers,
                                       timeout=httpx.Timeout(self.timeout, read=read_timeout)) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        _raise_for(resp)
                    for msg in parse_sse(resp.iter_lines()):
                        if msg.event == "end":
                            return
                        if msg.event == "error":
                            break
                        if msg.id is not None:
                            last = int(msg.id)
                        yield msg.json()
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError):
                pass
            time.sleep(0.5)

    def _follow(self, job_id: str, read_timeout: float | None, deadline: float | None) -> None:
        """Read one connection of the job's stream until it ends, breaks, or the deadline passes."""
        httpx = _httpx()
        try:
            with self._http.stream("GET", self._stream_path(job_id),
                                   timeout=httpx.Timeout(self.timeout, read=read_timeout)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    _raise_for(resp)
                parser = SseParser()
                for line in resp.iter_lines():
                    msg = parser.feed(line)
                    if msg is not None and msg.event in ("end", "error"):
                        return
                    if deadline is not None and time.monotonic() >= deadline:
                        return
        except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError):
            time.sleep(0.2)

    def wait(self, job_id: str, timeout: float | None = 60.0) -> dict[str, Any]:
        """Block until the job is final and return it; WaitTimeout after ``timeout`` seconds (None: forever).

        Follows the job's event stream, and reads the job again whenever it ends or breaks.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job["status"] in FINAL:
                return job
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeout(job_id, job["status"], timeout or 0.0)
            self._follow(job_id, None if left is None else max(0.1, left), deadline)


class AsyncClient(_Base):
    """An asyncio client (httpx) with the same methods as ``Client``, as coroutines."""

    def __init__(self, base_url: str, token: str | None = None, *, tenant: str | None = None,
                 org: str | None = None, timeout: float = 30.0, transport: Any = None) -> None:
        super().__init__(base_url, token, tenant=tenant, org=org, timeout=timeout)
        httpx = _httpx()
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=timeout,
                                       transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        resp = await self._http.request(method, PREFIX + path, **kw)
        _raise_for(resp)
        return resp.json()

    async def submit(self, kind: str, payload: Any = None, *, priority: int = 0,
                     run_at: datetime | str | None = None, max_attempts: int | None = None,
                     file_id: str | None = None, trace_id: str | None = None,
                     idempotency_key: str | None = None) -> dict[str, Any]:
        """Submit a job; returns it."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return await self._call(  # type: ignore[no-any-return]
            "POST", "/jobs", headers=headers,
            json=_job_body(kind, payload, priority, run_at, max_attempts, file_id, trace_id))

    async def get(self, job_id: str) -> dict[str, Any]:
        """A job with its events and diagnostics."""
        return await self._call("GET", f"/jobs/{job_id}")  # type: ignore[no-any-return]

    async def list(self, *, status: str | None = None, kind: str | None = None, file_id: str | None = None,
                   limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        """One page ``{"items", "next_cursor"}``, newest first."""
        return await self._call("GET", "/jobs",  # type: ignore[no-any-return]
                                params=self._list_params(status, kind, file_id, limit, cursor))

    async def cancel(self, job_id: str, reason: str = "") -> dict[str, Any]:
        """Cancel a queued or running job."""
        return await self._call("POST", f"/jobs/{job_id}/cancel",  # type: ignore[no-any-return]
                                json={"reason": reason})

    async def retry(self, job_id: str) -> dict[str, Any]:
        """Run a failed or cancelled job again."""
        return await self._call("POST", f"/jobs/{job_id}/retry")  # type: ignore[no-any-return]

    async def events(self, job_id: str | None = None, *, last_event_id: int | None = None,
                     read_timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """Events as they happen (see ``Client.events``)."""
        import asyncio
        httpx = _httpx()
        last = last_event_id
        while True:
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            try:
                async with self._http.stream("GET", self._stream_path(job_id), headers=headers,
                                             timeout=httpx.Timeout(self.timeout, read=read_timeout)) as resp:
                    if resp.status_code >= 400:
                        await resp.aread()
                        _raise_for(resp)
                    parser = SseParser()
                    async for line in resp.aiter_lines():
                        msg = parser.feed(line)
                        if msg is None:
                            continue
                        if msg.event == "end":
                            return
                        if msg.event == "error":
                            break
                        if msg.id is not None:
                            last = int(msg.id)
                        yield msg.json()
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError):
                pass
            await asyncio.sleep(0.5)

    async def _follow(self, job_id: str, read_timeout: float | None, deadline: float | None) -> None:
        """Read one connection of the job's stream until it ends, breaks, or the deadline passes."""
        import asyncio
        httpx = _httpx()
        try:
            async with self._http.stream("GET", self._stream_path(job_id),
                                         timeout=httpx.Timeout(self.timeout, read=read_timeout)) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    _raise_for(resp)
                parser = SseParser()
                async for line in resp.aiter_lines():
                    msg = parser.feed(line)
                    if msg is not None and msg.event in ("end", "error"):
                        return
                    if deadline is not None and time.monotonic() >= deadline:
                        return
        except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError):
            await asyncio.sleep(0.2)

    async def wait(self, job_id: str, timeout: float | None = 60.0) -> dict[str, Any]:
        """Wait until the job is final and return it; WaitTimeout after ``timeout`` seconds (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.get(job_id)
            if job["status"] in FINAL:
                return job
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeout(job_id, job["status"], timeout or 0.0)
            await self._follow(job_id, None if left is None else max(0.1, left), deadline)
