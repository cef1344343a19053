"""The Data Docs of a real validate run: nothing loaded from the network, every validation listed,
each page naming its run and data asset.

GX is slow to start, so one workspace is validated per module and every test reads its site. The
browser's view of the same site is tests/integration/test_data_docs_browser.py.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from support.manifest import manifest_frame, manifest_rows

from medimg.config import Config, DataConfig, ValidationConfig
from medimg.data.manifest import write_manifest
from medimg.validation.contract import run_name, validate_manifest
from medimg.validation.frames import FRAMES
from medimg.validation.stage import run_validate
from medimg.workspace import Workspace

# Where a page names what the browser fetches as it draws it; a link (<a href>) is fetched only
# when clicked, and leaves the page.
_LOADING_ATTRIBUTES = {"src", "srcset", "data", "poster", "background", "formaction"}
_CSS_LOADS = re.compile(r"url\(\s*['\"]?([^'\")]+)|@import\s+['\"]([^'\"]+)", re.IGNORECASE)
_REMOTE = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)


class _Page(HTMLParser):
    """What a page loads, its links, and the text of its inline styles and scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.links: list[str] = []
        self.inline: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in _LOADING_ATTRIBUTES or (tag == "link" and name == "href"):
                self.loads.append(value)
            elif tag == "a" and name == "href":
                self.links.append(value)
            elif name == "style":
                self.inline.append(value)
        self._in = tag if tag in ("style", "script") else None

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in:
            self.inline.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def _remote_loads(path: Path) -> list[str]:
    """Every address the browser would fetch from outside the machine to draw ``path``."""
    if path.suffix == ".html":
        page = _parse(path)
        loads, texts = page.loads, page.inline
    else:
        loads, texts = [], [path.read_text()]
    for text in texts:
        loads += [a or b for a, b in _CSS_LOADS.findall(text)]
    # a script that builds an address itself is caught by its scheme
    loads += [m for text in texts for m in re.findall(r"https?://[^\s'\"`)]+", text)]
    remote = dict.fromkeys(address.strip() for address in loads if _REMOTE.match(address))
    return [f"{path.name}: {address}" for address in remote]


@dataclass(frozen=True)
class Site:
    root: Path
    md5: str

    @property
    def validation_pages(self) -> list[Path]:
        return sorted((self.root / "validations").rglob("*.html"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    ws = Workspace(tmp_path_factory.mktemp("workspace"))
    write_manifest(manifest_frame(manifest_rows().values()), ws.manifest_path)
    run_validate(ws, Config())
    return Site(ws.data_docs_dir, hashlib.md5(ws.manifest_path.read_bytes()).hexdigest())


def test_no_page_loads_anything_from_outside_the_site(site: Site) -> None:
    files = [p for p in site.root.rglob("*") if p.suffix in (".html", ".css", ".js")]
    assert len(files) == 1 + 2 * len(FRAMES)  # the index, a suite and a result per frame

    remote = [load for path in files for load in _remote_loads(path)]
    assert remote == []
    for path in files:
        for address in _parse(path).loads if path.suffix == ".html" else []:
            assert (path.parent / address).resolve().is_relative_to(site.root.resolve())


def test_the_check_would_catch_what_gx_loads_from_cdns(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text(
        '<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/b.css">'
        '<script src="//code.jquery.com/jquery.js"></script>'
        "<style>a { background: url('https://s3.amazonaws.com/logo.png') }</style>"
        '<a href="https://greatexpectations.io">a link is not a load</a>'
    )

    assert _remote_loads(page) == [
        "page.html: https://maxcdn.bootstrapcdn.com/b.css",
        "page.html: //code.jquery.com/jquery.js",
        "page.html: https://s3.amazonaws.com/logo.png",
    ]


def test_the_index_lists_every_validation_of_the_run_in_html(site: Site) -> None:
    index = _parse(site.root / "index.html")

    listed = {link.split("/")[1] for link in index.links if link.startswith("validations/")}
    assert listed == {f"medimg_{frame}" for frame in FRAMES}
    # listed in the page itself, not left for a script from a CDN to draw
    assert index.inline and not any("bootstrapTable" in text for text in index.inline)
    for link in index.links:
        if not link.startswith("#") and "://" not in link:
            assert (site.root / link).is_file(), link


def test_each_validation_page_names_the_run_and_the_data_asset(site: Site) -> None:
    pages = site.validation_pages
    assert len(pages) == len(FRAMES)

    for page in pages:
        html = page.read_text()
        frame = page.stem.removeprefix("medimg-")
        assert f"Data asset: {frame}<" in html, page
        assert f">manifest-{site.md5}<" in html, page  # the Run Name cell
        assert "Data asset: None" not in html and "__none__" not in html, page


def test_every_page_is_styled_by_the_stylesheet_it_carries(site: Site) -> None:
    for path in [site.root / "index.html", *site.validation_pages]:
        page = _parse(path)
        assert any(".alert-secondary" in text for text in page.inline), path
        assert any("showFailedOnly" in text for text in page.inline), path


def test_a_run_name_of_digits_only_still_builds_the_data_docs(tmp_path: Path) -> None:
    # GX reads a run name as a date first; a bare md5 of digits would overflow it
    digits = "1" * 32
    validate_manifest(
        manifest_frame(manifest_rows().values()),
        ["normal", "pneumonia"],
        ValidationConfig(),
        tmp_path / "validation.json",
        tmp_path / "data_docs",
        near_duplicate_distance=DataConfig().near_duplicate_distance,
        near_duplicate_thumbnail_distance=DataConfig().near_duplicate_thumbnail_distance,
        data_version=digits,
    )

    assert (tmp_path / "data_docs" / "index.html").is_file()
    assert run_name(digits) in (tmp_path / "data_docs" / "index.html").read_text()
    assert run_name(None) == "manifest-unversioned"
