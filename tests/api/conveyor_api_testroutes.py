"""A test plugin that adds HTTP routes through ``conveyor_api_routes`` and accepts an API key.

No ``from __future__ import annotations``: FastAPI resolves route annotations at runtime.
"""

from conveyor import hookimpl

API_KEY = "test-api-key-of-the-host-app"
CRASH_SECRET = "db-password-in-a-stack-frame"


@hookimpl
def conveyor_api_routes(router, app):
    from typing import Annotated

    from fastapi import Depends

    from conveyor.api.deps import current_identity, current_scope
    from conveyor.api.errors import ApiError

    @router.get("/testroutes/whoami")
    def whoami(identity: Annotated[object, Depends(current_identity)],
               scope: Annotated[object, Depends(current_scope)]):
        return {"subject": identity.subject, "tenant": scope.tenant, "org": scope.org,
                "kinds": len(app.kinds.keys())}

    @router.get("/testroutes/teapot")
    def teapot():
        raise ApiError(418, "invalid_request", "a teapot", {"short": True})

    @router.get("/testroutes/crash")
    def crash():
        raise RuntimeError(f"connection string has {CRASH_SECRET}")


@hookimpl
def conveyor_authenticate(request):
    if request.headers.get("x-api-key") == API_KEY:
        return {"sub": "host-app-user", "tenant": "hooked", "roles": []}
    return None
