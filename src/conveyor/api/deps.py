"""FastAPI dependencies: the API's state, the caller's identity, its scope and its deployment.

Plugin routes use them too: ``Depends(current_identity)``, ``Depends(current_scope)``,
``Depends(current_app)``. Every router handed to ``conveyor_api_routes`` already requires
an identity, so a plugin route is never reachable anonymously.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from conveyor.api.auth import Identity, Verifier
from conveyor.api.errors import ApiError, unauthorized
from conveyor.api.tenancy import resolve_app, scope_for
from conveyor.app import Conveyor
from conveyor.dashboard import UiPage
from conveyor.store import Scope

log = logging.getLogger("conveyor.api")

_IDENTITY = "conveyor.identity"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: the dashboard's session cookie and the header its changes carry (see ``conveyor.api.ui``)
SESSION_COOKIE = "conveyor_session"
UI_HEADER = "x-conveyor-ui"
_SCOPE = "conveyor.scope"

bearer_scheme = HTTPBearer(auto_error=False, description="A JWT: `conveyor token --sub NAME` mints one.")


@dataclass
class ApiState:
    """What every request of one API application shares."""

    app: Conveyor
    verifier: Verifier
    route_errors: dict[str, str] = field(default_factory=dict)
    #: the dashboard pages plugins add, by name (``conveyor.api.ui.collect_pages``)
    ui_pages: dict[str, UiPage] = field(default_factory=dict)


def api_state(request: Request) -> ApiState:
    """This application's state."""
    return request.app.state.conveyor  # type: ignore[no-any-return]


def _hook_identity(state: ApiState, request: Request) -> Identity | None:
    host = state.app.plugins
    found: Any = host.first_result("conveyor_authenticate", request=request)
    if found is None:
        return None
    if isinstance(found, Identity):
        return found
    if not isinstance(found, dict):
        log.error("conveyor_authenticate returned %s, not a mapping; ignored", type(found).__name__)
        return None
    try:
        return Identity.from_claims(found, source="hook")
    except ValueError as exc:
        raise unauthorized(f"the identity the authentication plugin gave is not usable: {exc}") from None


# The dependencies are coroutines so a request does not hop to the thread pool for each; what may
# block (an authentication plugin, the tenant registry) still runs there. They do not depend on
# each other: FastAPI solves a dependency's own dependencies again for every route parameter that
# needs it (cached or not), so the identity and the scope are kept on the request instead.
async def _identity(request: Request) -> Identity:
    cached = request.scope.get(_IDENTITY)  # the ASGI scope: cheaper than request.state for a miss
    if isinstance(cached, Identity):
        return cached
    state = api_state(request)
    identity = None
    if state.app.plugins.pm.hook.conveyor_authenticate.get_hookimpls():
        identity = await run_in_threadpool(_hook_identity, state, request)
    if identity is None:
        header = request.headers.get("authorization")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise unauthorized("the Authorization header must be 'Bearer <JWT>'")
        else:
            token = _session_token(request)
        identity = state.verifier.identity(token.strip())
    request.scope[_IDENTITY] = identity
    return identity


def _session_token(request: Request) -> str:
    """The dashboard's session cookie, for a request without a bearer header (``conveyor.api.ui``)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise unauthorized("no bearer token: send Authorization: Bearer <JWT> (or sign in at /ui/)")
    if request.method not in SAFE_METHODS and request.headers.get(UI_HEADER) != "1":
        # a page of another site can make the browser send the cookie, but not this header
        raise ApiError(403, "forbidden", "a request signed in by the dashboard's cookie must carry the header "
                                         "X-Conveyor-UI: 1 to change anything; API clients send "
                                         "Authorization: Bearer <JWT> instead")
    return token


async def _scope(request: Request) -> Scope:
    cached = request.scope.get(_SCOPE)
    if isinstance(cached, Scope):
        return cached
    scope = scope_for(await _identity(request), request.headers.get("x-tenant-id"), request.headers.get("x-org-id"))
    request.scope[_SCOPE] = scope
    return scope


async def current_identity(request: Request,
                           credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
                           ) -> Identity:
    """The caller: the ``conveyor_authenticate`` hook's answer, else the bearer JWT; 401 when neither."""
    return await _identity(request)


async def current_scope(request: Request,
                        x_tenant_id: Annotated[str | None, Header(description="Act in this tenant (one the token "
                                                                              "allows).")] = None,
                        x_org_id: Annotated[str | None, Header(description="Act in this org (one the token "
                                                                           "allows).")] = None) -> Scope:
    """The tenant and org this request may see (``conveyor.api.tenancy.scope_for``)."""
    return await _scope(request)  # the headers are declared above for the OpenAPI description


async def current_app(request: Request) -> Conveyor:
    """The deployment holding this scope's jobs (``conveyor.api.tenancy.resolve_app``)."""
    default = api_state(request).app
    scope = await _scope(request)
    if default.tenancy is None:
        return default
    return await run_in_threadpool(resolve_app, default, await _identity(request), scope)


@dataclass(frozen=True)
class Caller:
    """Who asks, in which scope, against which deployment: the three dependencies above in one."""

    identity: Identity
    scope: Scope
    app: Conveyor


async def current_caller(request: Request,
                         credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
                         x_tenant_id: Annotated[str | None, Header(description="Act in this tenant (one the token "
                                                                               "allows).")] = None,
                         x_org_id: Annotated[str | None, Header(description="Act in this org (one the token "
                                                                            "allows).")] = None) -> Caller:
    """``current_identity``, ``current_scope`` and ``current_app`` as one dependency (one for FastAPI to solve)."""
    return Caller(await _identity(request), await _scope(request), await current_app(request))


async def require_admin(identity: Annotated[Identity, Depends(current_identity)]) -> Identity:
    """The caller, if it has the admin role; 403 otherwise."""
    if not identity.admin:
        raise ApiError(403, "forbidden", "this route is for the admin role")
    return identity


IdentityDep = Annotated[Identity, Depends(current_identity)]
ScopeDep = Annotated[Scope, Depends(current_scope)]
AppDep = Annotated[Conveyor, Depends(current_app)]
AdminDep = Annotated[Identity, Depends(require_admin)]
CallerDep = Annotated[Caller, Depends(current_caller)]
