"""The Data Docs site as medimg builds it: GX's pages, readable offline.

GX's own templates load Bootstrap, jQuery, bootstrap-table, Vega and Font Awesome from public
CDNs and a logo from S3; on a hospital network without internet the pages came out unstyled and
the index listed no validation, as its table is drawn by bootstrap-table. The site built here
loads nothing: :class:`OfflinePageView` puts medimg's templates (``docs_assets/templates``) before
GX's, and they inline a small stylesheet and script (``docs_assets/data_docs.css`` and
``data_docs.js``) where GX linked its CDNs, and render the index table in HTML.

Importing this module imports GX (seconds); GX imports it by name while it builds the site.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

from great_expectations.core.expectation_validation_result import (
    ExpectationSuiteValidationResult,
)
from great_expectations.render.renderer import ValidationResultsPageRenderer
from great_expectations.render.view import DefaultJinjaPageView
from jinja2 import ChoiceLoader, FileSystemLoader

ASSETS = Path(__file__).with_name("docs_assets")
"""The templates, stylesheet and script the pages are built with."""
SECTIONS = ("expectations", "validations", "profiling")
"""GX's site sections; each renders its pages with :class:`OfflinePageView`."""


class OfflinePageView(DefaultJinjaPageView):
    """GX's page view with medimg's templates first, so no page loads anything from the network.

    One template, ``page.j2``, serves the index and every other page: GX's index page differs
    only by a call-to-action footer, which medimg does not show.
    """

    _template = "page.j2"

    def __init__(
        self,
        custom_styles_directory: str | None = None,
        custom_views_directory: str | None = None,
    ) -> None:
        super().__init__(custom_styles_directory, custom_views_directory)
        self.env.loader = ChoiceLoader(
            [FileSystemLoader(str(ASSETS / "templates")), self.env.loader]
        )
        # read as text and inlined, not parsed as templates: a page needs no path to reach them
        self.env.globals["medimg_stylesheet"] = (ASSETS / "data_docs.css").read_text()
        self.env.globals["medimg_script"] = (ASSETS / "data_docs.js").read_text()


class NamedAssetResultsRenderer(ValidationResultsPageRenderer):
    """GX's validation page, naming the data asset that was validated.

    GX 1.x reads the asset's name for this page only from the result's batch spec, where a
    dataframe asset never puts it, so every page said "Data asset: None"; the index reads it from
    the active batch definition, which has it. The page is given the same name.
    """

    def render(
        self, validation_results: ExpectationSuiteValidationResult, suite_parameters: Any = None
    ) -> Any:
        """Render the page of ``validation_results``, its batch spec naming the asset."""
        spec = dict(validation_results.meta.get("batch_spec") or {})
        spec.setdefault("data_asset_name", validation_results.asset_name)
        named = copy.copy(validation_results)
        named.meta = {**validation_results.meta, "batch_spec": spec}
        return super().render(named, suite_parameters)


def site_config(site_dir: Path) -> dict[str, Any]:
    """A ``SiteBuilder`` configuration writing an offline site into ``site_dir``."""
    view = {"module_name": __name__, "class_name": OfflinePageView.__name__}
    sections: dict[str, Any] = {name: {"view": view} for name in SECTIONS}
    sections["validations"]["renderer"] = {
        "module_name": __name__,
        "class_name": NamedAssetResultsRenderer.__name__,
    }
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(site_dir.resolve()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "view": view},
        "site_section_builders": sections,
    }


def drop_static_assets(site_dir: Path) -> None:
    """Remove the ``static`` folder GX copies into every site.

    Its logo, fonts and stylesheet are linked by GX's templates only, never by medimg's, and its
    stylesheet names a logo on S3.
    """
    shutil.rmtree(site_dir / "static", ignore_errors=True)
