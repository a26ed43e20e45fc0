"""Request metrics of the API: ``conveyor_api_requests_total{method, route, status}``.

``route`` is the route's template (``/api/v1/jobs/{job_id}``), never a concrete path,
so labels stay few. Counted only when ``prometheus_client`` is installed.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _counter() -> Any:
    try:
        from conveyor.metrics import enable
        return enable().counter("conveyor_api_requests_total", "HTTP API requests by route and status.",
                                ("method", "route", "status"))
    except Exception:  # no prometheus_client: nothing to count into
        return None


class RequestMetrics:
    """Count every HTTP request once its response has started."""

    def __init__(self, app: ASGIApp, prefix: str = "/api/v1") -> None:
        self.app = app
        self.prefix = prefix
        self.counter = _counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.counter is None:
            await self.app(scope, receive, send)
            return
        status = 0

        async def seen(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, seen)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            # some FastAPI versions record the route as its router declared it, without the include prefix
            if template != "unmatched" and str(scope.get("path", "")).startswith(self.prefix + "/") \
                    and not template.startswith(self.prefix):
                template = self.prefix + template
            self.counter.labels(scope.get("method", "?"), template, str(status or 500)).inc()
