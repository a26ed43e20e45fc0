"""``/api/v1/health`` (public), ``/api/v1/metrics`` (loopback or metrics token), ``/api/v1/plugins`` (admins)."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from conveyor.api.deps import AdminDep, api_state
from conveyor.api.errors import ApiError
from conveyor.api.schemas import ErrorOut, HealthOut, PluginOut
from conveyor.app import Conveyor
from conveyor.errors import ConfigError

log = logging.getLogger("conveyor.api")

router = APIRouter(tags=["operations"])
HEALTH_PROBE_KEY = "_health/probe"


def _timed(name: str, check: Callable[[], str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        detail = check()
        return {"ok": True, "detail": detail, "ms": round((time.perf_counter() - t0) * 1000, 1)}
    except Exception as exc:
        log.warning("health: %s is down: %s: %s", name, type(exc).__name__, str(exc).splitlines()[0] if str(exc)
                    else "")
        return {"ok": False, "detail": f"unreachable ({type(exc).__name__})",
                "ms": round((time.perf_counter() - t0) * 1000, 1)}


def check_backends(app: Conveyor) -> dict[str, dict[str, Any]]:
    """Database, queue and storage, each with ok, a short detail and how long it took."""
    def database() -> str:
        with app.engine.connect() as conn:
            conn.execute(text("select 1"))
        return f"{app.engine.dialect.name} reachable"

    def queue() -> str:
        p = app.queue.pressure()
        return f"length {p.length}, pending {p.pending}"

    def storage() -> str:
        app.storage.exists(HEALTH_PROBE_KEY)
        return f"{app.storage.protocol} reachable"

    out = {"database": _timed("database", database), "queue": _timed("queue", queue),
           "storage": _timed("storage", storage)}
    tenancy = app.tenancy
    if tenancy is not None:
        def tenant_databases() -> str:
            keys = tenancy.registered(refresh=True)
            down = []
            for key in tenancy.cached():  # the ones this process serves; `conveyor doctor` checks every one
                try:
                    with tenancy.app_for(key, check=False).engine.connect() as conn:
                        conn.execute(text("select 1"))
                except Exception:
                    down.append(str(key))
            if down:
                raise ConnectionError(f"tenant database(s) {', '.join(down)} unreachable")
            return f"{len(keys)} registered ({tenancy.mode}); {len(tenancy.cached())} in use here, all reachable"
        out["tenant_databases"] = _timed("tenant databases", tenant_databases)
    return out


def failed_plugins(request: Request) -> list[str]:
    """Names of plugins that failed to load or to add their routes."""
    state = api_state(request)
    names = set(state.route_errors)
    try:
        names |= {i.name for i in state.app.plugins.list() if i.error}
    except Exception:  # plugin loading itself is broken: say so without failing the check
        names.add("?")
    return sorted(names)


@router.get("/health", response_model=None, summary="Is the deployment up",
            responses={200: {"model": HealthOut}, 503: {"model": HealthOut, "description": "A backend is down"}})
def health(request: Request) -> JSONResponse:
    """Database, queue and storage, each checked now; 503 when one is down. No token needed."""
    checks = check_backends(api_state(request).app)
    ok = all(c["ok"] for c in checks.values())
    body = {"status": "ok" if ok else "unavailable", "checks": checks, "plugins_failed": failed_plugins(request)}
    return JSONResponse(body, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})


def is_loopback(host: str | None) -> bool:
    """Whether a client address is this machine's (127.0.0.0/8, ::1, IPv4-mapped loopback)."""
    if not host:
        return False
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def may_read_metrics(client_host: str | None, authorization: str | None, token: str) -> bool:
    """Loopback clients, and bearers of CONVEYOR_METRICS_TOKEN (compared in constant time)."""
    if is_loopback(client_host):
        return True
    if not token or not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
                       403: {"model": ErrorOut}, 503: {"model": ErrorOut}})
def metrics(request: Request) -> Response:
    """This API process's metrics in the Prometheus text format; for loopback clients, or with
    `Authorization: Bearer $CONVEYOR_METRICS_TOKEN`."""
    state = api_state(request)
    client = request.client.host if request.client else None
    if not may_read_metrics(client, request.headers.get("authorization"), state.app.settings.metrics_token):
        raise ApiError(403, "forbidden", "metrics are served to loopback clients and to bearers of "
                                         "CONVEYOR_METRICS_TOKEN")
    from conveyor.metrics import enable
    try:
        registry = enable()
    except ConfigError as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    return Response(registry.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/plugins", response_model=None, summary="Loaded plugins (admins)",
            responses={200: {"model": list[PluginOut]}, 401: {"model": ErrorOut}, 403: {"model": ErrorOut}})
def plugins(request: Request, identity: AdminDep) -> list[dict[str, Any]]:
    """What `conveyor plugins --json` shows, with the plugins whose routes could not be mounted."""
    state = api_state(request)
    host = state.app.plugins
    host.load_all()
    return [{**i.__dict__, "hooks": list(i.hooks)} for i in host.list()]
