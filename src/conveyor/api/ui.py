"""The web dashboard at ``/ui``: static pages that read the API with the caller's own rights.

Signing in: ``/ui/?token=JWT`` (or the form on the page, ``POST /ui/session``) checks the
token, moves it into an HttpOnly, SameSite=Strict session cookie and redirects to a URL
without it. The API then accepts that cookie in place of the bearer header, with the same
tenant scoping; a cookie-signed request that changes something must also carry
``X-Conveyor-UI: 1``, which another site's page cannot send, so it cannot act as the
signed-in user. The pages, scripts and styles ship in the package (``static/ui``): no
build step, no CDN, nothing fetched from elsewhere at run time.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from conveyor.api.auth import Identity
from conveyor.api.deps import SESSION_COOKIE, UI_HEADER, api_state
from conveyor.api.errors import ApiError
from conveyor.dashboard import UiPage
from conveyor.plugins import PluginHost

router = APIRouter(include_in_schema=False)

#: a session lasts as long as its token, and never longer than this
MAX_SESSION_S = 12 * 3600
STATIC = Path(str(resources.files("conveyor.api"))) / "static" / "ui"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}

# the pages load only what ships here; nothing inline, nothing framed, no referrer leaks the path
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _page(name: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse((STATIC / name).read_text(encoding="utf-8"), status_code=status, headers=SECURITY_HEADERS)


def _signed_in(request: Request, token: str) -> Response:
    """Check ``token`` and answer a redirect to the dashboard that sets the session cookie."""
    try:
        claims = api_state(request).verifier.verify(token.strip())
        Identity.from_claims(claims)
    except ValueError as exc:
        return HTMLResponse(_signin_failed(f"the token's claims are not usable: {exc}"), status_code=401,
                            headers=SECURITY_HEADERS)
    except ApiError as exc:
        return HTMLResponse(_signin_failed(exc.message), status_code=401, headers=SECURITY_HEADERS)
    exp = claims.get("exp")
    max_age = MAX_SESSION_S if not isinstance(exp, int | float) else int(min(MAX_SESSION_S, exp - time.time()))
    resp = RedirectResponse("/ui/", status_code=303, headers=SECURITY_HEADERS)
    resp.set_cookie(SESSION_COOKIE, token.strip(), max_age=max(1, max_age), path="/", httponly=True,
                    samesite="strict", secure=request.url.scheme == "https")
    return resp


def _signin_failed(message: str) -> str:
    import html
    body = (STATIC / "signin-failed.html").read_text(encoding="utf-8")
    return body.replace("{message}", html.escape(message))


@router.get("/ui")
def ui_root() -> RedirectResponse:
    """The dashboard lives at ``/ui/``."""
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/")
def ui_index(request: Request, token: str | None = None) -> Response:
    """The dashboard; with ``?token=`` sign in first (the token moves to a cookie and out of the URL)."""
    if token:
        return _signed_in(request, token)
    return _page("index.html")


@router.get("/ui/session")
def ui_whoami(request: Request) -> JSONResponse:
    """Whether the session cookie signs someone in, and who (200 either way: the page asks before it shows)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return JSONResponse({"signed_in": False, "reason": None}, headers=SECURITY_HEADERS)
    try:
        who = api_state(request).verifier.identity(token)
    except ApiError as exc:
        return JSONResponse({"signed_in": False, "reason": exc.message}, headers=SECURITY_HEADERS)
    return JSONResponse({"signed_in": True, "subject": who.subject, "tenant": who.tenant, "admin": who.admin},
                        headers=SECURITY_HEADERS)


@router.post("/ui/session")
def ui_session(request: Request, token: Annotated[str, Form(max_length=16384)]) -> Response:
    """Sign in with a pasted token (the page's form)."""
    return _signed_in(request, token)


@router.post("/ui/logout")
def ui_logout(request: Request) -> Response:
    """Forget the session cookie."""
    if request.headers.get(UI_HEADER) != "1":
        raise ApiError(403, "forbidden", "sign out from the dashboard (the request lacks X-Conveyor-UI: 1)")
    resp = Response(status_code=204, headers=SECURITY_HEADERS)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


def _asset(folder: Path, name: str) -> Response:
    """A file of ``folder`` by name: scripts, styles and pictures only, nothing below or above it."""
    path = folder / name
    if "/" in name or "\\" in name or name.startswith(".") or path.suffix not in _TYPES or not path.is_file():
        raise ApiError(404, "not_found", f"the dashboard has no file {name[:80]!r}")
    return FileResponse(path, media_type=_TYPES[path.suffix],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


@router.get("/ui/static/{name}")
def ui_static(name: str) -> Response:
    """A script, style or picture of the dashboard (only the files shipped, by name)."""
    return _asset(STATIC, name)


@router.get("/ui/pages")
def ui_pages(request: Request) -> JSONResponse:
    """The pages plugins add (``conveyor_ui_pages``), in nav order."""
    pages = api_state(request).ui_pages
    return JSONResponse([{"name": p.name, "title": p.title, "script": f"/ui/plugin/{p.name}/{p.script.name}"}
                         for p in pages.values()], headers={"Cache-Control": "no-cache"})


@router.get("/ui/plugin/{page}/{name}")
def ui_plugin_asset(request: Request, page: str, name: str) -> Response:
    """A file of a plugin page's folder."""
    found = api_state(request).ui_pages.get(page)
    if found is None:
        raise ApiError(404, "not_found", f"no dashboard page {page[:40]!r}")
    return _asset(found.script.parent, name)


def collect_pages(host: PluginHost) -> dict[str, UiPage]:
    """Every plugin's pages by name, in nav order; a bad or duplicate page is left out and reported by name."""
    pages: dict[str, tuple[str, UiPage]] = {}
    for plugin, result, error in host.each_plugin("conveyor_ui_pages", lambda _: {}):
        if error is not None or result is None:
            continue
        for page in result:
            problem = page.problem() if isinstance(page, UiPage) else f"{page!r} is not a conveyor.dashboard.UiPage"
            if problem is None and page.name in pages:
                problem = f"page {page.name!r} is already added by plugin {pages[page.name][0]}"
            if problem is not None:
                host.record(plugin, f"conveyor_ui_pages: {problem}")
                continue
            pages[page.name] = (plugin, page)
    return {name: page for name, (_, page) in sorted(pages.items(), key=lambda kv: (kv[1][1].order, kv[0]))}
