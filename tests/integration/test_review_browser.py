"""The review page in real headless Chromium (Debian's, driven by Playwright), as a reviewer
uses it: log in, upload a film, see the prediction, switch the heat map on, correct the label
with the keyboard, and find the feedback recorded and the image reviewed on the worklist.

`make test` installs chromium first, so this test runs on a fresh machine; without a browser it
fails with the fix instead of skipping.
"""

from __future__ import annotations

import pytest
from support.browser import LoopbackOnly, headless_chromium
from support.review import champion_workspace, png_bytes, served

from medimg.feedback.log import read_log
from medimg.review.app import create_app
from medimg.review.auth import add_user, users_path
from medimg.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_mlflow_env")]


def test_a_reviewer_corrects_a_prediction_with_the_keyboard(workspace_templates, tmp_path):
    ws = champion_workspace(workspace_templates, tmp_path / "ws")
    token = add_user(users_path(ws), "dr-keys")
    film = tmp_path / "film.png"
    film.write_bytes(png_bytes(size=128, seed=11))
    names = ws.config.base.class_names

    with served(create_app(ws, ws.config, Settings())) as url, headless_chromium() as browser:
        page = browser.new_page()
        guard = LoopbackOnly()
        page.route("**/*", guard)
        console_errors: list[str] = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

        page.goto(f"{url}/")
        assert page.url.endswith("/login")  # reads are closed to anonymous users
        page.fill("input[name=reviewer]", "dr-keys")
        page.fill("input[name=token]", token)
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/")

        page.set_input_files("input[type=file]", str(film))
        page.click("form.upload button[type=submit]")
        page.wait_for_url(f"{url}/review/*")
        predicted = page.get_by_test_id("predicted-label").inner_text()
        assert predicted in names
        assert page.get_by_test_id("model-version").inner_text() == "medimg-classifier v1"
        for name in names:
            assert page.get_by_text(f"P({name})").count() >= 1
        shortcuts = page.get_by_test_id("shortcuts").inner_text()
        assert "show or hide the heat map" in shortcuts and "confirm" in shortcuts

        heatmap = page.locator("#heatmap")
        assert heatmap.is_hidden()  # off by default
        with page.expect_response(lambda r: r.url.endswith("/heatmap")) as loaded:
            page.keyboard.press("h")
        heatmap.wait_for(state="visible")
        assert loaded.value.status == 200
        assert loaded.value.headers["content-type"] == "image/png"
        box = heatmap.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100
        assert "not a localisation" in page.locator("#heatmap-caption").inner_text()
        assert page.locator("#film").is_hidden()

        other = next(n for n in names if n != predicted)
        page.keyboard.press(str(names.index(other) + 1))  # correct to class N
        page.wait_for_url("**recorded=*")
        assert "Recorded" in page.get_by_test_id("recorded").inner_text()
        assert page.get_by_test_id("reviewed").inner_text() == "by dr-keys"

        page.keyboard.press("w")
        page.wait_for_url(f"{url}/")
        worklist = page.get_by_test_id("worklist").inner_text()
        assert "by dr-keys" in worklist

        # the API's documentation renders from the app's own assets, no CDN
        page.goto(f"{url}/docs")
        page.locator('.opblock-summary-path[data-path="/predict"]').wait_for()
        paths = {t.replace("\u200b", "") for t in
                 page.locator(".opblock-summary-path").all_inner_texts()}
        assert {"/predict", "/feedback", "/worklist", "/model", "/health"} <= paths
        assert guard.left == [] and console_errors == []

    [entry] = [e for e in read_log(ws) if e.kind == "label"]
    assert (entry.reviewer, entry.label, entry.model_version) == ("dr-keys", other, "1")
