"""Headless Chromium from Debian's `chromium` package, driven by Playwright; nothing downloads a browser.

Screenshots go to test-artifacts/ (ignored by git). The README's pictures in docs/img are refreshed only
on purpose: `make docs-images` sets EDGELOOP_README_IMAGES, and only then does `keep_readme_picture` copy.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
README_IMAGES = REPO / "docs" / "img"
README_IMAGES_VAR = "EDGELOOP_README_IMAGES"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def chromium() -> Iterator[Any]:
    """The system Chromium under Playwright (fails the test when the Debian package is missing)."""
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: install Debian's `chromium` package (make system-packages)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def keep_readme_picture(screenshot: Path, name: str) -> Path | None:
    """Copy a screenshot into the README's pictures as `name` when EDGELOOP_README_IMAGES names their folder."""
    folder = os.environ.get(README_IMAGES_VAR)
    if not folder:
        return None
    target = Path(folder) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(screenshot, target)
    return target


class Clicks:
    """Clicks the user makes, counted."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, locator: Any, **kwargs: Any) -> None:
        locator.click(**kwargs)
        self.count += 1


def airflow_login(browser: Any, base: str, user: str, password: str, click: Clicks | None = None) -> Any:
    """A new browser context (no cookies: a user who never came here), logged in to the Airflow UI."""
    click = click or Clicks()
    page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{base}/")
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(password)
    click(page.get_by_role("button", name="Sign in"))
    page.wait_for_url(lambda url: "/auth/" not in url)  # back in the UI: the login's redirects are done
    page.wait_for_load_state()
    return page
