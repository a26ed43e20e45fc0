"""The dashboard's Problems page (the judge plugin's) in headless Chromium: submit A+B from the browser and
watch its verdict arrive without a reload, judged by a real worker in the real sandbox."""

from __future__ import annotations

import pytest
from browser_support import chromium, require_browser, shot, watched_page

from conveyor.api.auth import mint_token
from conveyor_judge.selftest import aplusb_package, program

from .test_api import SECRET, client, deployment, upload  # noqa: F401  (deployment is a fixture)
from pipeline_support import Pipeline

require_browser()

from playwright.sync_api import expect

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

WRONG = "a, b = map(int, input().split())\nprint(a - b)\n"


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def sign_in(page, sub: str, tenant: str) -> None:
    page.goto(f"/ui/?token={mint_token(SECRET, sub, tenant=tenant, ttl_s=900)}")
    page.wait_for_url("**/ui/")


def test_submit_a_plus_b_and_watch_the_verdict_arrive(browser, deployment):  # noqa: F811
    app, url = deployment
    with client(url, "root", "acme", admin=True) as admin:
        problem = upload(admin, aplusb_package(), title="A plus B", feedback="verdict+time").json()["id"]
    base = url.removesuffix("/api/v1")
    with Pipeline(app, concurrency=2), watched_page(browser, base) as page:
        sign_in(page, "ada", "acme")
        page.click("nav a[data-page='p/problems']")
        page.click(f"#problems a[href='#/p/problems/{problem}']")
        page.wait_for_selector("#submit-form")
        page.select_option("#language", "python3")
        page.fill("#code", program("python3", "aplusb"))
        page.click("#submit-form button[type=submit]")
        page.wait_for_url("**/#/p/problems/s/*")
        expect(page.locator("h1 + .badge")).to_have_attribute("data-verdict", "accepted", timeout=90000)
        expect(page.locator("#tests tbody tr")).to_have_count(3)
        assert page.locator("#tests meter").count() == 6  # time and memory of each test, against the limits
        shot(page, "submission")
        # a wrong answer, from a file whose extension names the language
        page.goto(f"/ui/#/p/problems/{problem}")
        page.wait_for_selector("#submit-form")
        page.set_input_files("#source-file", files=[{"name": "minus.py", "mimeType": "text/x-python",
                                                     "buffer": WRONG.encode()}])
        expect(page.locator("#language")).to_have_value("python3")
        page.click("#submit-form button[type=submit]")
        page.wait_for_url("**/#/p/problems/s/*")
        expect(page.locator("h1 + .badge")).to_have_attribute("data-verdict", "wrong_answer", timeout=90000)
        page.click("nav a[data-page='p/problems']")
        expect(page.locator("#scoreboard [data-verdict=accepted]")).to_have_text("1")
        expect(page.locator("#scoreboard [data-verdict=wrong_answer]")).to_have_text("1")
        shot(page, "problems")


def test_a_tenant_sees_only_its_own_submissions(browser, deployment):  # noqa: F811
    _app, url = deployment
    with client(url, "root", "acme", admin=True) as admin:
        problem = upload(admin, aplusb_package()).json()["id"]
    with client(url, "bob", "globex") as bob:
        theirs = bob.post("/submit", json={"problem_id": problem, "language": "python3", "code": WRONG}).json()
    with watched_page(browser, url.removesuffix("/api/v1")) as page:
        sign_in(page, "ada", "acme")
        page.goto("/ui/#/p/problems")
        page.wait_for_selector("#submissions")
        assert page.locator("#submissions tbody tr").count() == 0
        page.goto(f"/ui/#/p/problems/s/{theirs['job_id']}")
        page.wait_for_selector("text=Something went wrong")
        page.problems[:] = [p for p in page.problems if "status of 404" not in p]  # that answer is the point
