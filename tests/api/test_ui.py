"""The dashboard over HTTP: signing in moves the token to a cookie, the cookie is confined like the token,
a cross-site page cannot act with it, and the pages load nothing from elsewhere."""

from __future__ import annotations

import httpx
import pytest
from api_support import auth, token


@pytest.fixture
def browser(server):
    """A cookie-keeping client at the server's root, as a browser is."""
    with httpx.Client(base_url=server, timeout=30, follow_redirects=False) as c:
        yield c


def sign_in(client: httpx.Client, tok: str) -> httpx.Response:
    return client.get("/ui/", params={"token": tok})


def test_a_token_in_the_url_becomes_an_httponly_cookie_and_leaves_the_url(browser):
    r = sign_in(browser, token("alice"))
    assert r.status_code == 303 and r.headers["location"] == "/ui/"
    cookie = r.headers["set-cookie"]
    assert "conveyor_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert r.headers["referrer-policy"] == "no-referrer"
    page = browser.get("/ui/")
    assert page.status_code == 200 and "<title>Conveyor</title>" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    me = browser.get("/api/v1/overview")
    assert me.status_code == 200 and me.json()["subject"] == "alice" and me.json()["admin"] is False


@pytest.mark.parametrize("bad, says", [("not-a-jwt", "not a JWT"), (token("x", ttl=-120), "expired"),
                                       (token("x", secret="another-secret-of-enough-length-0123"), "signature")])
def test_a_bad_token_is_refused_with_the_reason_and_sets_no_cookie(browser, bad, says):
    r = sign_in(browser, bad)
    assert r.status_code == 401 and says in r.text and "set-cookie" not in r.headers
    assert browser.get("/api/v1/overview").status_code == 401


def test_the_sign_in_form_posts_the_token(browser):
    r = browser.post("/ui/session", data={"token": token("bob")})
    assert r.status_code == 303
    assert browser.get("/api/v1/overview").json()["subject"] == "bob"


def test_a_cookie_signed_change_needs_the_dashboards_header(browser, api_app):
    """A page of another site can make the browser send the cookie, but not a custom header."""
    job = api_app.submit("conveyor.echo", {})
    sign_in(browser, token("alice"))
    forged = browser.post(f"/api/v1/jobs/{job}/cancel")
    assert forged.status_code == 403 and "X-Conveyor-UI" in forged.json()["error"]["message"]
    assert api_app.get(job).status.value == "queued"  # nothing changed
    ok = browser.post(f"/api/v1/jobs/{job}/cancel", headers={"X-Conveyor-UI": "1"})
    assert ok.status_code == 200 and ok.json()["status"] == "cancelled"


def test_the_cookie_sees_only_its_tenants_jobs(browser, api_app):
    mine = api_app.submit("conveyor.echo", {}, tenant="acme")
    theirs = api_app.submit("conveyor.echo", {}, tenant="globex")
    sign_in(browser, token("eve", tenant="acme"))
    listed = [j["id"] for j in browser.get("/api/v1/jobs").json()["items"]]
    assert listed == [mine]
    assert browser.get(f"/api/v1/jobs/{theirs}").status_code == 404
    assert browser.post(f"/api/v1/jobs/{theirs}/cancel", headers={"X-Conveyor-UI": "1"}).status_code == 404
    counts = browser.get("/api/v1/overview").json()["counts"]
    assert counts["queued"] == 1  # globex's job is not counted
    # another tenant's header does not widen the cookie's rights
    assert browser.get("/api/v1/jobs", headers={"X-Tenant-ID": "globex"}).status_code == 403


def test_a_bearer_header_wins_over_the_cookie(browser, api_app):
    sign_in(browser, token("alice"))
    r = browser.get("/api/v1/overview", headers=auth(token("root", admin=True)))
    assert r.json()["subject"] == "root" and r.json()["admin"] is True


def test_sign_out_forgets_the_cookie(browser):
    sign_in(browser, token("alice"))
    assert browser.post("/ui/logout").status_code == 403  # not from the dashboard
    assert browser.post("/ui/logout", headers={"X-Conveyor-UI": "1"}).status_code == 204
    assert browser.get("/api/v1/overview").status_code == 401


def test_admins_see_workers_and_the_queue_and_tenants_do_not(http, server, worker):
    with httpx.Client(base_url=server + "/api/v1", headers=auth(token("root", admin=True)), timeout=30) as admin:
        o = admin.get("/overview").json()
    assert o["admin"] is True and "queue" in o and o["queue"]["length"] >= 0
    assert isinstance(o["workers"], list)
    plain = http.get("/overview").json()
    assert "queue" not in plain and "workers" not in plain


@pytest.mark.parametrize("name", ["ui.js", "ui.css", "logo.svg"])
def test_the_assets_ship_in_the_package(browser, name):
    r = browser.get(f"/ui/static/{name}")
    assert r.status_code == 200 and len(r.content) > 100 and r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("name", ["..%2f..%2fapp.py", ".hidden.js", "index.py", "missing.js", "%2e%2e"])
def test_nothing_but_the_shipped_assets_is_served(browser, name):
    assert browser.get(f"/ui/static/{name}").status_code == 404


def test_the_page_loads_nothing_from_another_origin(browser):
    import re
    page = browser.get("/ui/").text + browser.get("/ui/static/ui.js").text + browser.get("/ui/static/ui.css").text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page


def _host(*plugins):
    from conveyor.plugins import load_plugins

    def register(pm):
        for name, plugin in plugins:
            pm.register(plugin, name=name)
    return load_plugins(entry_points=False, register=register)


def test_plugin_pages_are_collected_in_order_and_bad_ones_are_reported_by_name(tmp_path):
    from conveyor import hookimpl
    from conveyor.api.ui import collect_pages
    from conveyor.dashboard import UiPage

    script = tmp_path / "page.js"
    script.write_text("export function render() {}\n")

    class Good:
        @hookimpl
        def conveyor_ui_pages(self):
            return [UiPage("zeta", "Zeta", script, order=5), UiPage("alpha", "Alpha", script, order=5)]

    class Clash:
        @hookimpl
        def conveyor_ui_pages(self):
            return [UiPage("alpha", "Again", script), UiPage("Bad Name", "x", script),
                    UiPage("gone", "Gone", tmp_path / "missing.js"), "not a page"]

    class Broken:
        @hookimpl
        def conveyor_ui_pages(self):
            raise RuntimeError("boom")

    # pluggy calls the plugin registered last first: good's pages come before clash's
    host = _host(("clash", Clash()), ("good", Good()), ("broken", Broken()))
    pages = collect_pages(host)
    assert list(pages) == ["alpha", "zeta"] and pages["alpha"].title == "Alpha"
    errors = {i.name: i.error for i in host.list() if i.error}
    assert "already added by plugin good" in errors["clash"] and "boom" in errors["broken"]


def test_a_plugin_page_and_its_folder_are_served_by_name_only(api_env, tmp_path):
    from api_support import Server

    from conveyor import hookimpl
    from conveyor.api.app import create_app
    from conveyor.app import Conveyor
    from conveyor.config import load_settings
    from conveyor.dashboard import UiPage

    folder = tmp_path / "ui"
    folder.mkdir()
    (folder / "page.js").write_text("export function render({ main }) { main.textContent = 'hi'; }\n")
    (folder / "page.css").write_text("p { color: red }\n")
    (tmp_path / "secret.js").write_text("the host's file\n")

    class Pages:
        @hookimpl
        def conveyor_ui_pages(self):
            return [UiPage("demo", "Demo", folder / "page.js")]

    app = Conveyor(load_settings(env=api_env), plugins=_host(("pages", Pages())))
    try:
        with Server(create_app(app)) as s, httpx.Client(base_url=s.url) as c:
            assert c.get("/ui/pages").json() == [{"name": "demo", "title": "Demo", "script": "/ui/plugin/demo/page.js"}]
            assert "render" in c.get("/ui/plugin/demo/page.js").text
            assert c.get("/ui/plugin/demo/page.css").headers["content-type"].startswith("text/css")
            for bad in ("..%2fsecret.js", "%2e%2e%2fsecret.js", "missing.js", ".page.js"):
                assert c.get(f"/ui/plugin/demo/{bad}").status_code == 404, bad
            assert c.get("/ui/plugin/other/page.js").status_code == 404
    finally:
        app.close()


def test_the_history_endpoint_gives_every_minute_and_gauges_to_admins_only(http, server):
    mine = http.get("/overview/history", params={"minutes": 30}).json()["minutes"]
    assert len(mine) == 30 and "queue_length" not in mine[0] and mine[-1]["recorded"] is False
    with httpx.Client(base_url=server + "/api/v1", headers=auth(token("root", admin=True)), timeout=30) as admin:
        theirs = admin.get("/overview/history").json()["minutes"]
        assert len(theirs) == 60 and "queue_length" in theirs[0]
        assert admin.get("/overview/history", params={"minutes": 0}).status_code == 422
