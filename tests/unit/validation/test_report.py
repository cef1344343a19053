"""The contract's results and their writing: staged, then swapped in; no GX needed here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medimg.validation.report import (
    SHORT_ID,
    CheckResult,
    ValidationReport,
    check_docs_dir,
    publish,
    short_id,
)


def _result(name: str, level: str, success: bool) -> CheckResult:
    return CheckResult(name, "expect_x", level, success, {"n": 1}, f"{name} details", ["a"])


REPORT = ValidationReport(
    success=False,
    checks=[
        _result("ok", "critical", True),
        _result("broken", "critical", False),
        _result("odd", "warning", False),
        _result("fine", "warning", True),
    ],
    n_rows=3,
)


def _site(folder: Path, page: str = "new site") -> None:
    (folder / "index.html").write_text(page)


def test_failed_critical_checks_and_warnings_are_told_apart() -> None:
    assert [c.name for c in REPORT.failed_critical] == ["broken"]
    assert REPORT.failed == REPORT.failed_critical
    assert [c.name for c in REPORT.warnings] == ["odd"]


def test_to_dict_gives_every_check_and_the_failed_and_warning_names() -> None:
    written = REPORT.to_dict()

    assert written["success"] is False and written["n_rows"] == 3
    assert written["failed"] == ["broken"] and written["warnings"] == ["odd"]
    assert [c["name"] for c in written["checks"]] == ["ok", "broken", "odd", "fine"]
    assert written["checks"][1] == {
        "name": "broken",
        "expectation": "expect_x",
        "level": "critical",
        "success": False,
        "observed": {"n": 1},
        "details": "broken details",
        "offending_ids": ["a"],
    }
    assert json.loads(json.dumps(written)) == written


def test_short_id_shortens_only_hash_long_ids() -> None:
    assert short_id("p-17") == "p-17"
    assert short_id("x" * 2 * SHORT_ID) == "x" * 2 * SHORT_ID
    assert short_id("0123456789abcdef" * 4) == "0123456789ab"


def test_publish_writes_the_report_and_the_data_docs(tmp_path: Path) -> None:
    report_path = tmp_path / "reports" / "validation.json"
    docs = tmp_path / "reports" / "data_docs"

    publish(REPORT, report_path, docs, _site)

    assert json.loads(report_path.read_text()) == REPORT.to_dict()
    assert (docs / "index.html").read_text() == "new site"
    assert sorted(p.name for p in docs.parent.iterdir()) == ["data_docs", "validation.json"]


def test_publish_without_a_docs_folder_builds_no_docs(tmp_path: Path) -> None:
    def build(folder: Path) -> None:
        raise AssertionError(f"no Data Docs were asked for, yet built in {folder}")

    publish(REPORT, tmp_path / "validation.json", None, build)

    assert [p.name for p in tmp_path.iterdir()] == ["validation.json"]


def test_a_failed_docs_build_leaves_the_previous_report_and_site_intact(tmp_path: Path) -> None:
    report_path = tmp_path / "validation.json"
    report_path.write_text('{"previous": true}\n')
    docs = tmp_path / "data_docs"
    docs.mkdir()
    _site(docs, "old site")

    def build(folder: Path) -> None:
        _site(folder)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        publish(REPORT, report_path, docs, build)

    assert report_path.read_text() == '{"previous": true}\n'
    assert (docs / "index.html").read_text() == "old site"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data_docs", "validation.json"]


def test_publish_replaces_the_previous_site_entirely(tmp_path: Path) -> None:
    docs = tmp_path / "data_docs"
    docs.mkdir()
    _site(docs, "old site")
    (docs / "stale.html").write_text("old page")

    publish(REPORT, tmp_path / "validation.json", docs, _site)

    assert sorted(p.name for p in docs.iterdir()) == ["index.html"]
    assert (docs / "index.html").read_text() == "new site"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data_docs", "validation.json"]


def test_a_docs_folder_may_be_new_empty_or_data_docs(tmp_path: Path) -> None:
    check_docs_dir(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_docs_dir(tmp_path / "empty")
    (tmp_path / "site").mkdir()
    _site(tmp_path / "site")
    check_docs_dir(tmp_path / "site")


def test_a_docs_folder_that_is_a_file_or_holds_other_things_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")

    with pytest.raises(ValueError, match="is a file"):
        check_docs_dir(tmp_path / "file")
    with pytest.raises(ValueError, match="holds no Data Docs"):
        check_docs_dir(tmp_path / "mine")
