"""The dashboard in a real browser: headless Chromium (Debian's package) driven by Playwright.

Each test fails on any console error or failed request of the page, and writes a
screenshot of what it checked to ``docs/img/dashboard/`` (linked from docs/dashboard.md).
"""

from __future__ import annotations

import pytest
from api_support import token
from browser_support import chromium, require_browser, shot, watched_page

require_browser()

from playwright.sync_api import expect

# one database is enough for what a browser sees; the API tests cover both
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser, server):
    with watched_page(browser, server) as pg:
        yield pg


def record_history(app, minutes: int = 30) -> None:
    """Minutes of history as the scheduler's roll-up writes them (the page draws them; tests/test_history.py
    checks the roll-up itself)."""
    from datetime import timedelta

    from conveyor.db import utcnow
    from conveyor.schema import stats
    now = utcnow().replace(second=0, microsecond=0)
    rows = []
    for k in range(1, minutes + 1):
        load = 40 + 30 * ((k * 7) % 5)
        counts = {"submitted": load, "succeeded": load - k % 3, "failed": k % 3, "p50_ms": 20 + k % 7,
                  "p99_ms": 80 + 9 * (k % 5)}
        rows.append({"minute": now - timedelta(minutes=k), "tenant_id": "default", **counts,
                     "queue_length": None, "queue_pending": None, "oldest_age_ms": None, "outbox_pending": None})
        rows.append({"minute": now - timedelta(minutes=k), "tenant_id": "*", **counts, "queue_length": k % 11,
                     "queue_pending": k % 4, "oldest_age_ms": 150 * (k % 6), "outbox_pending": k % 2})
    with app.engine.begin() as c:
        c.execute(stats.insert(), rows)


def sign_in(pg, **claims) -> None:
    pg.goto(f"/ui/?token={token(**claims)}")
    pg.wait_for_url("**/ui/")  # the token left the address bar
    assert "token=" not in pg.url


def test_overview_and_jobs_pages_show_the_callers_jobs(page, api_app, worker):
    ids = [api_app.submit("conveyor.echo", {"i": i}) for i in range(3)]
    failed = api_app.submit("conveyor.fail", {"code": "invalid_payload"})
    worker.wait([*ids, failed])
    record_history(api_app)
    sign_in(page, sub="root", admin=True)
    page.wait_for_selector(".tile .n[data-status=succeeded]:text('3')")
    assert page.text_content(".tile .n[data-status=failed]") == "1"
    page.wait_for_selector("text=scheduler leader")
    for chart, series in (("throughput", "succeeded"), ("latency", "p99_ms"), ("queue", "queue_length"),
                          ("age", "oldest_s")):
        assert page.locator(f"#chart-{chart} path[data-series={series}]").count() == 1, chart
    shot(page, "overview")
    page.click("nav a[data-page=jobs]")
    page.wait_for_selector("#jobs tbody tr")
    expect(page.locator("#jobs tbody tr")).to_have_count(4)
    shot(page, "jobs")
    page.select_option("select[name=status]", "failed")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    page.click(f"a[href='#/jobs/{failed}']")
    page.wait_for_selector("#diagnosis")
    assert "invalid_payload" in page.text_content("#diagnosis")
    assert page.locator("svg.timeline circle[data-action=job_failed]").count() == 1
    shot(page, "job-failed")


def test_a_new_job_appears_and_finishes_without_a_reload(page, api_app, worker):
    sign_in(page)
    page.goto("/ui/#/jobs")
    page.wait_for_selector(".live:text('live')")
    job = api_app.submit("conveyor.sleep", {"seconds": 0.5})
    page.wait_for_selector(f"tr[data-job='{job}']")
    page.wait_for_selector(f"tr[data-job='{job}'] .badge.succeeded", timeout=30000)


def test_cancel_a_running_job_from_its_page(page, api_app, worker):
    job = api_app.submit("conveyor.sleep", {"seconds": 60})
    worker.wait([job], statuses=("running",))
    sign_in(page)
    page.goto(f"/ui/#/jobs/{job}")
    page.wait_for_selector("h1:text('conveyor.sleep') ~ .badge.running")
    shot(page, "job-running")
    page.click("#cancel")
    page.wait_for_selector(".badge.cancelled")
    worker.wait([job], statuses=("cancelled",))
    page.wait_for_selector("svg.timeline circle[data-action=cancelled]")
    assert page.locator("#retry").is_visible()


def test_a_tenant_never_sees_another_tenants_jobs(page, api_app):
    mine = api_app.submit("conveyor.echo", {}, tenant="acme")
    theirs = api_app.submit("conveyor.echo", {}, tenant="globex")
    sign_in(page, sub="eve", tenant="acme")
    page.goto("/ui/#/jobs")
    page.wait_for_selector(f"tr[data-job='{mine}']")
    assert page.locator(f"tr[data-job='{theirs}']").count() == 0
    page.goto(f"/ui/#/jobs/{theirs}")
    page.wait_for_selector("text=No such job")
    # the browser logs the API's 404 for the other tenant's job; that answer is the point here
    page.problems[:] = [p for p in page.problems if "status of 404" not in p]
    assert theirs not in page.text_content("main").replace(f"#/jobs/{theirs}", "")


def test_without_a_session_the_page_asks_for_a_token_and_the_form_signs_in(page):
    page.goto("/ui/")
    page.wait_for_selector("textarea#token")
    shot(page, "sign-in")
    page.fill("textarea#token", token("alice"))
    page.click("form button[type=submit]")
    page.wait_for_selector(".tile")
    assert "alice" in page.text_content("#who")


def test_the_pages_fit_a_phone(page, api_app):
    api_app.submit("conveyor.echo", {})
    page.set_viewport_size({"width": 390, "height": 800})
    sign_in(page)
    page.goto("/ui/#/jobs")
    page.wait_for_selector("#jobs tbody tr")
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= 390, f"the jobs page is {wide}px wide on a 390px screen"
    shot(page, "jobs-phone")


def test_hostile_values_in_a_job_are_shown_as_text(page, api_app):
    """A payload, a reason and an error carrying markup stay text: nothing runs, no element is made of them."""
    evil = '<img src=x id=pwned onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
    job = api_app.submit("conveyor.echo", {"html": evil, "</pre><b id=pwned2>": 1})
    api_app.cancel(job, reason=evil[:200])
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page)
    page.goto(f"/ui/#/jobs/{job}")
    page.wait_for_selector("#events")
    shown = page.text_content("main")
    assert "<img src=x id=pwned onerror=" in shown and "<script>document.title=" in shown  # shown, as text
    assert page.locator("#pwned, #pwned2, main script").count() == 0
    assert page.title() == "Conveyor" and dialogs == []
