"""Headless Chromium (Debian's package) through Playwright, for the dashboard's browser tests.

On CI a missing browser or Playwright is an error (``.ci/run`` installs both); elsewhere the
tests that need them are skipped with the command that installs them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(__file__).resolve().parents[1] / "docs" / "img" / "dashboard"
#: WebGL without a GPU: ANGLE on SwiftShader, which Chromium only allows when asked
ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def require_browser() -> None:
    """Skip the calling module without Chromium and Playwright (fail on CI)."""
    if CHROMIUM is not None and importlib.util.find_spec("playwright") is not None:
        return
    if os.environ.get("CI"):
        raise RuntimeError("the dashboard's browser tests need Debian's chromium and the playwright package; "
                           ".ci/run installs both")
    pytest.skip("no chromium or playwright here (apt-get install chromium; pip install playwright)",
                allow_module_level=True)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def watched_page(browser: Any, base_url: str, **context: Any) -> Iterator[Any]:
    """A page in a fresh context; the test fails on a console error, a page error or a failed request.

    ``page.problems`` holds them: a test that provokes an error answer on purpose removes its line.
    """
    ctx = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 860}, **context)
    page = ctx.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}")
            if "/stream" not in r.url else None)  # an event stream is cut when the page moves on
    page.set_default_timeout(15000)
    page.problems = problems
    try:
        yield page
    finally:
        ctx.close()
    assert problems == []


def shot(page: Any, name: str) -> None:
    """A full-page screenshot into docs/img/dashboard/ (linked from docs/dashboard.md)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    # the viewport grown to the page, not a full-page shot: the sticky header would land mid-page
    size = page.viewport_size
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height), 4000))})
    page.wait_for_timeout(200)
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    page.set_viewport_size(size)
