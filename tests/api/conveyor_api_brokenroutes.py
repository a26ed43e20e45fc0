"""A test plugin whose ``conveyor_api_routes`` adds a route, then fails: none of its routes may be mounted."""

from __future__ import annotations

from conveyor import hookimpl


@hookimpl
def conveyor_api_routes(router, app):
    @router.get("/broken/half")
    def half():
        return {"half": True}

    raise RuntimeError("the broken plugin's database is not configured")
