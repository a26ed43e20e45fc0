"""The dashboard's Files page (the CAD plugin's) in headless Chromium: upload a STEP file, watch it convert,
see its preview and a rendered 3D view, on a real worker."""

from __future__ import annotations

import io

import pytest
from browser_support import chromium, require_browser, shot, watched_page
from cad_support import CadPipeline
from test_api import serve, token

from conveyor_cad.samples import sample_path

require_browser()

from playwright.sync_api import expect


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_upload_a_step_file_and_see_its_preview_and_3d_view(browser, db_url, tmp_path):
    from PIL import Image

    with serve(db_url, tmp_path) as (app, base, _data), CadPipeline(app), watched_page(browser, base) as page:
        page.goto(f"/ui/?token={token('ada')}")
        page.wait_for_url("**/ui/")
        page.click("nav a[data-page='p/files']")
        page.wait_for_selector("#dropzone")
        page.set_input_files("#file-input", str(sample_path("bracket.step")))
        page.wait_for_url("**/ui/#/p/files/*")
        expect(page.locator("h1 + .badge")).to_have_text("done", timeout=60000)  # converted, live
        page.wait_for_selector("img#preview")
        assert page.locator("img#preview").evaluate("img => img.complete && img.naturalWidth > 0")
        canvas = page.wait_for_selector("canvas#viewer", timeout=30000)
        page.wait_for_timeout(500)  # a few frames
        pixels = Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")
        colours = pixels.getcolors(maxcolors=1 << 20) or []
        background = max(colours)[1]
        drawn = sum(n for n, c in colours if sum(abs(a - b) for a, b in zip(c, background, strict=True)) > 30)
        assert drawn > 0.02 * pixels.width * pixels.height, f"the 3D view is blank ({drawn} drawn pixels)"
        assert "bbox" in page.text_content("#metadata")
        page.click("#fit")
        shot(page, "file")
        page.click("nav a[data-page='p/files']")
        page.wait_for_selector("#files tbody tr [data-status=done]")
        shot(page, "files")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_another_tenants_file_is_not_shown(browser, db_url, tmp_path):
    with serve(db_url, tmp_path) as (_app, base, _data), watched_page(browser, base) as page:
        import httpx
        with httpx.Client(base_url=base + "/api/v1") as c:
            theirs = c.post("/files", files={"file": ("b.step", sample_path("bracket.step").read_bytes())},
                            headers={"Authorization": f"Bearer {token('bob', tenant='globex')}"}).json()["id"]
        page.goto(f"/ui/?token={token('ada')}")
        page.wait_for_url("**/ui/")
        page.goto("/ui/#/p/files")
        page.wait_for_selector("#files")
        assert page.locator("#files tbody tr").count() == 0
        page.goto(f"/ui/#/p/files/{theirs}")
        page.wait_for_selector("text=No such file")
        page.problems[:] = [p for p in page.problems if "status of 404" not in p]  # that answer is the point
