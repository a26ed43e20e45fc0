"""``create_app``: the FastAPI application of one deployment, with the routes plugins add."""

from __future__ import annotations

import inspect
import logging
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute

from conveyor import __version__
from conveyor.api import errors, events, health, jobs, overview, ui
from conveyor.api.auth import Verifier
from conveyor.api.body import BodyLimitMiddleware
from conveyor.api.deps import ApiState, current_identity
from conveyor.api.observe import RequestMetrics
from conveyor.app import Conveyor

log = logging.getLogger("conveyor.api")

PREFIX = "/api/v1"
#: JSON bodies may be this much larger than a payload (the job's other fields, escapes)
JSON_OVERHEAD_BYTES = 65536

DESCRIPTION = """Jobs, their event streams, and the routes installed plugins add.

Authenticate with `Authorization: Bearer <JWT>` (`conveyor token` mints one for development).
Every error is `{"error": {"code", "message", "detail"}}` with a code of the error catalog.
"""


def add_routes(api: FastAPI, router: APIRouter, prefix: str) -> None:
    """Add ``router``'s routes to ``api`` under ``prefix`` as routes of the application itself.

    ``include_router`` of recent FastAPI versions matches an included router's routes
    through a layer per router and request; the core routes are hot enough to avoid it.
    What the copy cannot carry over (a route of another kind) falls back to ``include_router``.
    """
    if not all(isinstance(r, APIRoute) for r in router.routes):
        api.include_router(router, prefix=prefix)
        return
    names = [n for n in inspect.signature(api.router.add_api_route).parameters
             if n not in ("self", "path", "endpoint", "route_class_override")]
    for route in router.routes:
        assert isinstance(route, APIRoute)
        api.router.add_api_route(prefix + route.path, route.endpoint,
                                 **{n: getattr(route, n) for n in names if hasattr(route, n)})


def mount_plugin_routes(api: FastAPI, app: Conveyor, state: ApiState) -> None:
    """Give each ``conveyor_api_routes`` plugin a router of its own and mount the ones that work."""
    host = app.plugins
    routers: dict[str, APIRouter] = {}

    def arguments(plugin: str) -> dict[str, Any]:
        routers[plugin] = APIRouter(dependencies=[Depends(current_identity)])
        return {"router": routers[plugin], "app": app}

    for plugin, _, error in host.each_plugin("conveyor_api_routes", arguments):
        if error is not None:  # one broken plugin keeps its routes out, and nothing else
            state.route_errors[plugin] = error
            continue
        try:
            staged = APIRouter()
            staged.include_router(routers[plugin], prefix=PREFIX)  # builds every route before any is live
        except Exception as exc:
            message = f"conveyor_api_routes: {type(exc).__name__}: {exc}"
            state.route_errors[plugin] = message
            host.record(plugin, message)
            continue
        api.router.routes.extend(staged.routes)


def create_app(app: Conveyor | None = None) -> FastAPI:
    """The ASGI application serving ``app``: core routes under ``/api/v1``, OpenAPI at ``/openapi.json``,
    docs at ``/docs``, then the routes of every ``conveyor_api_routes`` plugin.

    Nothing here touches the database: the application starts while a backend is down,
    and ``/api/v1/health`` says which. A bad key configuration raises ConfigError.
    """
    app = app if app is not None else Conveyor()
    state = ApiState(app=app, verifier=Verifier(app.settings))
    if not state.verifier.configured and not app.plugins.pm.hook.conveyor_authenticate.get_hookimpls():
        log.warning("no CONVEYOR_JWT_SECRET, CONVEYOR_JWT_PUBLIC_KEY or CONVEYOR_JWT_JWKS_FILE and no "
                    "conveyor_authenticate plugin: every authenticated route answers 401")
    api = FastAPI(title="Conveyor", version=__version__, description=DESCRIPTION, openapi_url="/openapi.json",
                  docs_url="/docs", redoc_url=None)
    api.state.conveyor = state
    errors.install(api)
    framework = list(api.router.routes)  # /openapi.json and /docs
    for module in (health, jobs, events, overview):
        add_routes(api, module.router, PREFIX)
    add_routes(api, ui.router, "")  # the dashboard, /ui
    # every request is matched against the routes in order: the job routes first, /docs last
    api.router.routes[:] = [r for r in api.router.routes if r not in framework] + framework
    mount_plugin_routes(api, app, state)
    state.ui_pages = ui.collect_pages(app.plugins)
    s = app.settings
    api.add_middleware(BodyLimitMiddleware, json_limit=max(2 * s.max_payload_bytes,
                                                           s.max_payload_bytes + JSON_OVERHEAD_BYTES),
                       upload_limit=s.max_upload_bytes)
    api.add_middleware(RequestMetrics, prefix=PREFIX)  # outermost: refusals of the body limit are counted too
    return api


def from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory`` (``conveyor api --workers N``): settings from the environment."""
    return create_app(Conveyor())
