"""The Data Docs in a real browser with the network off, as on a hospital network without internet:
the index lists every validation, a validation page is styled, and no request leaves the machine.

Chromium comes from the system (``apt-get install chromium``), as Playwright cannot download its
own here; Playwright drives it through ``executable_path``.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.manifest import manifest_frame, manifest_rows

from medimg.config import Config
from medimg.data.manifest import write_manifest
from medimg.validation.frames import FRAMES
from medimg.validation.stage import run_validate
from medimg.workspace import Workspace

pytestmark = pytest.mark.integration

ALERT_GREY = "rgb(226, 227, 229)"
"""The background data_docs.css gives ``.alert-secondary``, the header of every section."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip(
        "playwright.sync_api",
        reason="playwright is not installed; `pip install -e '.[dev]'` installs it",
    )
    chromium = shutil.which("chromium")  # /usr/bin/chromium from apt
    if chromium is None:
        pytest.skip("no chromium on PATH; install it with `apt-get install -y chromium`")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("workspace"))
    write_manifest(manifest_frame(manifest_rows().values()), ws.manifest_path)
    run_validate(ws, Config())
    return ws


def test_the_data_docs_read_offline(browser: Any, workspace: Workspace, tmp_path: Path) -> None:
    site = workspace.data_docs_dir.resolve()
    run_name = f"manifest-{hashlib.md5(workspace.manifest_path.read_bytes()).hexdigest()}"
    left_the_site: list[str] = []
    errors: list[str] = []

    def only_files_in_the_site(route: Any) -> None:
        url = route.request.url
        if url.startswith(site.as_uri() + "/"):
            route.continue_()
        else:
            left_the_site.append(url)
            route.abort()

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_offline(True)
    context.route("**/*", only_files_in_the_site)  # file:// requests pass through it too
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto((site / "index.html").as_uri())
    rows = page.locator("#Validation-Results tbody tr")
    assert rows.count() == len(FRAMES)
    assert all(rows.nth(i).is_visible() for i in range(len(FRAMES)))
    listed = {rows.nth(i).locator("td").nth(3).inner_text().strip() for i in range(len(FRAMES))}
    assert listed == set(FRAMES)  # the Asset Name column
    assert page.locator("#Validation-Results").get_by_text(run_name).count() == len(FRAMES)

    rows.filter(has_text="class_counts").locator("a").first.click()
    page.wait_for_load_state()
    assert "/validations/medimg_class_counts/" in page.url
    header = page.locator(".alert-secondary").first
    assert header.evaluate("el => getComputedStyle(el).backgroundColor") == ALERT_GREY
    assert page.get_by_text("Data asset: class_counts").is_visible()
    page.get_by_text("Show more info...").click()
    assert page.get_by_text(run_name, exact=True).is_visible()

    screenshot = tmp_path / "validation.png"
    page.screenshot(path=str(screenshot), full_page=True)
    context.close()

    assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size > 10_000
    assert left_the_site == []
    assert errors == []
