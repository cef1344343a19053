"""Headless Chromium for the browser checks, and a guard that keeps its requests on the machine.

Chromium comes from the system (``apt-get install chromium``), as Playwright cannot download its
own here; Playwright drives it through ``executable_path``. A test skips, and a script exits, with
:func:`missing_browser`'s reason, which names the fix.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def missing_browser() -> str | None:
    """Why no headless Chromium can be launched here, with the fix; None when one can."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed; `pip install -e '.[dev]'` installs it"
    if shutil.which("chromium") is None:  # /usr/bin/chromium from apt
        return "no chromium on PATH; install it with `apt-get install -y chromium`"
    return None


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """The system's Chromium, headless, driven by Playwright; closed on exit."""
    reason = missing_browser()
    if reason is not None:
        raise RuntimeError(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


class LoopbackOnly:
    """A Playwright route handler: lets requests to this machine through, aborts any other and
    keeps its URL in :attr:`left`, so a check can say nothing tried to leave."""

    def __init__(self) -> None:
        self.left: list[str] = []

    def __call__(self, route: Any) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob") or parts.hostname in LOOPBACK_HOSTS:
            route.continue_()
        else:
            self.left.append(url)
            route.abort()
